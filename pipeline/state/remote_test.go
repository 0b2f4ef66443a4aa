package state

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/pipeline-dev/pipeline/pipeline"
)

const testStem = "unused" // Open(..., "unused.hcl") in tests and helpers

// remoteHelper is the second process of the remote tests.
func remoteHelper(ctx context.Context, mode string, st Store) int {
	switch mode {
	case "noop":
		return 0
	case "race-lock":
		// Wait for "go" so that all racers start together, race once, report, and (the winner)
		// hold the lock until stdin closes.
		in := bufio.NewReader(os.Stdin)
		if line, _ := in.ReadString('\n'); strings.TrimSpace(line) != "go" {
			fmt.Fprintln(os.Stderr, "no go signal")
			return 1
		}
		lk, err := st.Lock(ctx, "alice", NewLockInfo("apply"), 0)
		if err != nil {
			fmt.Println("lost")
			fmt.Fprintln(os.Stderr, err)
			if IsLocked(err) {
				return 4
			}
			return 1
		}
		fmt.Println("won " + lk.ID())
		_, _ = io.Copy(io.Discard, in)
		if err := lk.Unlock(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// backend is one remote location under test.
type backend struct {
	name     string
	url      string
	procs    bool          // other processes can share it (not mem://)
	requests *atomic.Int64 // HTTP requests seen by the S3 server
	// deleteIfMatch is the If-Match header of the last DELETE the S3 server saw.
	deleteIfMatch *atomic.Value
	// at returns a URL of the same store with another prefix.
	at func(prefix string) string
}

var memSeq atomic.Int64

func testBackends(t *testing.T) []backend {
	t.Helper()
	memName := fmt.Sprintf("mem://conformance-%d/", memSeq.Add(1))
	mem := backend{name: "mem", url: memName + "ci", at: func(p string) string { return memName + p }}
	file := backend{name: "file", url: "file://" + filepath.ToSlash(t.TempDir()), procs: true,
		at: func(string) string { return "file://" + filepath.ToSlash(t.TempDir()) }}
	return []backend{mem, file, s3Backend(t), gcsBackend(t), azureBackend(t)}
}

// gcsBackend starts fake-gcs-server (in-memory) on loopback; gcsblob and the storage client reach
// it through STORAGE_EMULATOR_HOST. It checks ifGenerationMatch on uploads atomically under its
// backend mutex (internal/backend/memory.go CreateObject); like gofakes3 it ignores a precondition
// on DELETE.
func gcsBackend(t *testing.T) backend {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", PublicHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "state"})
	t.Setenv("STORAGE_EMULATOR_HOST", strings.TrimPrefix(srv.URL(), "http://"))
	return backend{name: "gcs", url: "gs://state/ci", procs: true, at: func(p string) string { return "gs://state/" + p }}
}

// s3Backend starts gofakes3 (in-memory backend) on loopback. gofakes3 v1.2.0 checks If-None-Match
// and If-Match on PUT atomically under its backend lock (backend.go CheckPutConditions); it ignores
// If-Match on DELETE, see TestGofakes3IgnoresConditionalDelete.
func s3Backend(t *testing.T) backend {
	t.Helper()
	mem := s3mem.New()
	if err := mem.CreateBucket("state"); err != nil {
		t.Fatal(err)
	}
	faker := gofakes3.New(mem, gofakes3.WithLogger(gofakes3.DiscardLog()))
	var n atomic.Int64
	var ifMatch atomic.Value
	h := faker.Server()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if r.Method == http.MethodDelete {
			ifMatch.Store(r.Header.Get("If-Match"))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	// Static test credentials and no shared config: the SDK never looks beyond loopback.
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	q := "?region=us-east-1&use_path_style=true&disable_https=true&endpoint=" + srv.URL
	return backend{name: "s3", url: "s3://state/ci/runs" + q, procs: true, requests: &n, deleteIfMatch: &ifMatch,
		at: func(p string) string { return "s3://state/" + p + q }}
}

func openRemote(t *testing.T, url string, opts RemoteOptions) *RemoteStore {
	t.Helper()
	st, err := OpenRemoteWith(context.Background(), url, testStem, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestRemoteConformance(t *testing.T) {
	for _, b := range testBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Run("LockExclusive8", func(t *testing.T) { testLockExclusive8(t, b) })
			t.Run("CASConflict", func(t *testing.T) { testCASConflict(t, b) })
			t.Run("StaleLock", func(t *testing.T) { testStaleLock(t, b) })
			t.Run("ForceUnlockLive", func(t *testing.T) { testForceUnlockLive(t, b) })
			t.Run("DeadPidSameHost", func(t *testing.T) { testDeadPid(t, b) })
			t.Run("Backup", func(t *testing.T) { testBackup(t, b) })
			t.Run("Refresh", func(t *testing.T) { testRefresh(t, b) })
			t.Run("Keys", func(t *testing.T) { testKeys(t, b) })
			t.Run("Cache", func(t *testing.T) { testCache(t, b) })
			t.Run("TimeoutPerOperation", func(t *testing.T) { testTimeoutPerOperation(t, b) })
			if b.procs {
				t.Run("KilledHolder", func(t *testing.T) { testKilledHolder(t, b) })
			}
		})
	}
}

func testLockExclusive8(t *testing.T, b backend) {
	const racers = 8
	ctx := context.Background()
	if !b.procs {
		// mem:// lives in one process: race 8 stores (8 "runners") from 8 goroutines.
		gate := make(chan struct{})
		var wg sync.WaitGroup
		var won atomic.Int64
		locks := make(chan Lock, racers)
		errs := make(chan error, racers)
		for range racers {
			st := openRemote(t, b.url, RemoteOptions{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				lk, err := st.Lock(ctx, "alice", NewLockInfo("apply"), 0)
				if err != nil {
					errs <- err
					return
				}
				won.Add(1)
				locks <- lk
			}()
		}
		close(gate)
		wg.Wait()
		close(errs)
		if won.Load() != 1 {
			t.Fatalf("%d of %d racers got the lock", won.Load(), racers)
		}
		for err := range errs {
			if !IsLocked(err) {
				t.Fatalf("loser: %v", err)
			}
		}
		lk := <-locks
		if err := lk.Unlock(); err != nil {
			t.Fatal(err)
		}
		assertNoLock(t, b)
		return
	}

	type racer struct {
		cmd    *exec.Cmd
		stdin  io.WriteCloser
		stdout *bufio.Reader
		stderr strings.Builder
	}
	rs := make([]*racer, racers)
	for i := range rs {
		r := &racer{cmd: helperCmd(t, "race-lock", b.url)}
		r.stdin, _ = r.cmd.StdinPipe()
		out, _ := r.cmd.StdoutPipe()
		r.stdout = bufio.NewReader(out)
		r.cmd.Stderr = &r.stderr
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		rs[i] = r
	}
	for _, r := range rs {
		io.WriteString(r.stdin, "go\n")
	}
	var winner *racer
	var winnerID string
	for _, r := range rs {
		line, err := r.stdout.ReadString('\n')
		if err != nil {
			t.Fatalf("racer %d: %v", r.cmd.Process.Pid, err)
		}
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "won "); ok {
			if winner != nil {
				t.Fatalf("two winners: pid %d and pid %d", winner.cmd.Process.Pid, r.cmd.Process.Pid)
			}
			winner, winnerID = r, id
		}
	}
	if winner == nil {
		for _, r := range rs {
			r.stdin.Close()
			r.cmd.Wait()
			t.Logf("pid %d: %s", r.cmd.Process.Pid, r.stderr.String())
		}
		t.Fatal("no racer got the lock")
	}
	// Losers exit 4 naming the winner (its pid or lock ID: the error is taken after the create
	// fails, when the winner's lock is there to read).
	for _, r := range rs {
		if r == winner {
			continue
		}
		err := r.cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 4 {
			t.Fatalf("loser pid %d: %v %s", r.cmd.Process.Pid, err, r.stderr.String())
		}
		want := fmt.Sprintf("state is locked by pid %d on host ", winner.cmd.Process.Pid)
		if !strings.Contains(r.stderr.String(), want) || !strings.Contains(r.stderr.String(), "(lock ID "+winnerID+")") {
			t.Fatalf("loser message does not name the winner:\n%s", r.stderr.String())
		}
	}
	winner.stdin.Close()
	if err := winner.cmd.Wait(); err != nil {
		t.Fatalf("winner: %v %s", err, winner.stderr.String())
	}
	assertNoLock(t, b)
}

// assertNoLock checks that alice's lock is free again.
func assertNoLock(t *testing.T, b backend) {
	t.Helper()
	st := openRemote(t, b.url, RemoteOptions{})
	lk, err := st.Lock(context.Background(), "alice", NewLockInfo("check"), 0)
	if err != nil {
		t.Fatalf("lock left behind: %v", err)
	}
	lk.Unlock()
}

func testCASConflict(t *testing.T, b backend) {
	ctx := context.Background()
	a, other := openRemote(t, b.url, RemoteOptions{}), openRemote(t, b.url, RemoteOptions{})
	if err := a.Put(ctx, "cas", testInstance("first", pipeline.StatusRunning)); err != nil {
		t.Fatal(err)
	}
	mine, err := a.Get(ctx, "cas")
	if err != nil || mine.Serial != 1 {
		t.Fatalf("get: %+v %v", mine, err)
	}
	theirs, _ := other.Get(ctx, "cas")
	theirs.SetRecord(&Record{Kind: "train", Name: "theirs", Status: pipeline.StatusComplete})
	if err := other.Put(ctx, "cas", theirs); err != nil {
		t.Fatal(err)
	}
	mine.SetRecord(&Record{Kind: "train", Name: "mine", Status: pipeline.StatusComplete})
	err = a.Put(ctx, "cas", mine)
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Have != 1 || ce.Stored != 2 {
		t.Fatalf("want a conflict (have 1, stored 2), got %v", err)
	}
	if !strings.Contains(err.Error(), "Nothing was overwritten") {
		t.Fatalf("message: %v", err)
	}
	got, _ := openRemote(t, b.url, RemoteOptions{}).Get(ctx, "cas")
	if got.Serial != 2 || got.Records["train.theirs"] == nil || got.Records["train.mine"] != nil {
		t.Fatalf("lost update: %+v", got.Records)
	}
	// A fresh instance must not blindly replace an existing one either.
	fresh := openRemote(t, b.url, RemoteOptions{})
	if err := fresh.Put(ctx, "cas", testInstance("blind", pipeline.StatusComplete)); !errors.As(err, &ce) {
		t.Fatalf("blind put over an existing instance: %v", err)
	}

	// The service-level conditions themselves (what the CAS stands on).
	c := a.c
	obj := a.dir + "raw.json"
	if err := c.create(ctx, obj, []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.create(ctx, obj, []byte(`{"n":2}`)); !errors.Is(err, errPrecondition) {
		t.Fatalf("second create: %v", err)
	}
	_, v1, err := c.read(ctx, obj)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.replace(ctx, obj, []byte(`{"n":3}`), v1); err != nil {
		t.Fatalf("replace at the read version: %v", err)
	}
	if err := c.replace(ctx, obj, []byte(`{"n":4}`), v1); !errors.Is(err, errPrecondition) {
		t.Fatalf("replace at a stale version: %v", err)
	}
	data, _, _ := c.read(ctx, obj)
	if string(data) != `{"n":3}` {
		t.Fatalf("object = %s", data)
	}
}

func testStaleLock(t *testing.T, b backend) {
	ctx := context.Background()
	st := openRemote(t, b.url, RemoteOptions{})
	old := time.Now().Add(-20 * time.Minute).UTC()
	dead := LockInfo{ID: "deadbeef00000001", Operation: "apply", Host: "ci-runner-7", PID: 4242, Created: old.Add(-time.Hour), Refreshed: old}
	data, _ := json.Marshal(dead)
	// A dead run leaves one lock per batch instance, all with its ID.
	for _, k := range []string{"stale", "stale-2"} {
		if err := st.c.write(ctx, st.lockObj(k), data); err != nil {
			t.Fatal(err)
		}
	}
	_, err := st.Lock(ctx, "stale", NewLockInfo("apply"), 0)
	var le *LockedError
	if !errors.As(err, &le) || !le.Stale || le.Info.ID != dead.ID {
		t.Fatalf("want a stale LockedError, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"state is locked by pid 4242 on host ci-runner-7 since ",
		"not been refreshed for 20m",
		"\n    pipeline force-unlock -state ",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	// Never broken silently: a second try is refused the same way.
	if _, err := st.Lock(ctx, "stale", NewLockInfo("apply"), 0); !IsLocked(err) {
		t.Fatalf("stale lock broken silently: %v", err)
	}
	// The printed command works as printed, without the config file: the CLI opens -state URL
	// with no FILE and calls ForceUnlock.
	args, ok := strings.CutPrefix(le.Unlock, "pipeline force-unlock -state ")
	i := strings.LastIndexByte(args, ' ')
	if !ok || i < 0 || args[i+1:] != dead.ID {
		t.Fatalf("unlock command %q", le.Unlock)
	}
	admin, err := Open(ctx, strings.Trim(args[:i], "'"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.ForceUnlock(ctx, "nosuchid", false); err == nil || !strings.Contains(err.Error(), "deadbeef00000001") {
		t.Fatalf("force-unlock of an unknown id: %v", err)
	}
	if err := admin.ForceUnlock(ctx, dead.ID, false); err != nil {
		t.Fatalf("force-unlock of a stale lock: %v", err)
	}
	for _, k := range []string{"stale", "stale-2"} {
		if _, _, err := st.readLock(ctx, st.lockObj(k)); !errors.Is(err, errNotFound) {
			t.Fatalf("lock of %s left after force-unlock: %v", k, err)
		}
	}
	// -state may also name the prefix the configs live under (the URL apply was given).
	dead.ID = "deadbeef00000002"
	data, _ = json.Marshal(dead)
	if err := st.c.write(ctx, st.lockObj("stale"), data); err != nil {
		t.Fatal(err)
	}
	byPrefix, err := Open(ctx, b.url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer byPrefix.Close()
	if err := byPrefix.ForceUnlock(ctx, dead.ID, false); err != nil {
		t.Fatalf("force-unlock through the prefix URL: %v", err)
	}
	if _, _, err := st.readLock(ctx, st.lockObj("stale")); !errors.Is(err, errNotFound) {
		t.Fatalf("lock left after force-unlock through the prefix: %v", err)
	}
	lk, err := st.Lock(ctx, "stale", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatalf("lock after force-unlock: %v", err)
	}
	lk.Unlock()
}

func testForceUnlockLive(t *testing.T, b backend) {
	ctx := context.Background()
	holder, admin := openRemote(t, b.url, RemoteOptions{}), openRemote(t, b.url, RemoteOptions{})
	lk, err := holder.Lock(ctx, "live", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Put(ctx, "live", testInstance("x", pipeline.StatusRunning)); err != nil {
		t.Fatal(err)
	}
	if err := admin.ForceUnlock(ctx, lk.ID(), false); err == nil || !strings.Contains(err.Error(), "-force") {
		t.Fatalf("force-unlock of a live lock without -force: %v", err)
	}
	if err := admin.ForceUnlock(ctx, lk.ID(), true); err != nil {
		t.Fatal(err)
	}
	// The holder notices at its next refresh and stops writing.
	rl := lk.(*remoteLock)
	if err := rl.refresh(ctx); !errors.Is(err, errLockLost) {
		t.Fatalf("refresh after force-unlock: %v", err)
	}
	if err := holder.Put(ctx, "live", testInstance("y", pipeline.StatusComplete)); err == nil || !strings.Contains(err.Error(), "lock lost") {
		t.Fatalf("put after losing the lock: %v", err)
	}
	if err := lk.Unlock(); err == nil {
		t.Fatal("unlock of a removed lock reported nothing")
	}
}

func testDeadPid(t *testing.T, b backend) {
	ctx := context.Background()
	st := openRemote(t, b.url, RemoteOptions{})
	cmd := helperCmd(t, "noop", b.url)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	info := NewLockInfo("apply")
	info.PID, info.ID = cmd.Process.Pid, "0000dead0000beef"
	data, _ := json.Marshal(info)
	if err := st.c.write(ctx, st.lockObj("dead"), data); err != nil {
		t.Fatal(err)
	}
	lk, err := st.Lock(ctx, "dead", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatalf("lock of a dead pid on this host: %v", err)
	}
	defer lk.Unlock()
	note := LockNote(lk)
	if !strings.Contains(note, "broke the lock 0000dead0000beef") || !strings.Contains(note, fmt.Sprint(cmd.Process.Pid)) {
		t.Fatalf("note: %q", note)
	}
	// The same lock from another machine (other boot id) is not ours to judge.
	info.BootID, info.ID = "another-boot", "0000dead0000bee2"
	data, _ = json.Marshal(info)
	st.c.write(ctx, st.lockObj("dead2"), data)
	if _, err := st.Lock(ctx, "dead2", NewLockInfo("apply"), 0); !IsLocked(err) {
		t.Fatalf("broke a lock of another boot: %v", err)
	}
}

func testBackup(t *testing.T, b backend) {
	ctx := context.Background()
	st := openRemote(t, b.url, RemoteOptions{})
	lk, err := st.Lock(ctx, "bk", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	in := testInstance("lora", pipeline.StatusRunning)
	if err := st.Put(ctx, "bk", in); err != nil {
		t.Fatal(err)
	}
	lineage := in.Lineage
	in.Records["train.lora"].Status = pipeline.StatusComplete
	if err := st.Put(ctx, "bk", in); err != nil {
		t.Fatal(err)
	}
	if in.Serial != 2 || in.Lineage != lineage {
		t.Fatalf("serial %d lineage %s (was %s)", in.Serial, in.Lineage, lineage)
	}
	data, _, err := st.c.read(ctx, st.backupObj("bk"))
	if err != nil {
		t.Fatal(err)
	}
	var prev Instance
	if err := json.Unmarshal(data, &prev); err != nil || prev.Serial != 1 || prev.Records["train.lora"].Status != pipeline.StatusRunning || prev.Lineage != lineage {
		t.Fatalf("backup: %v %+v", err, prev)
	}
	// A corrupt object is reported with its backup, never overwritten.
	if err := st.c.write(ctx, st.stateObj("bk"), []byte("{broken")); err != nil {
		t.Fatal(err)
	}
	_, err = st.Get(ctx, "bk")
	if err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), "bk.state.json.backup") {
		t.Fatalf("corrupt object: %v", err)
	}
	if err := st.Put(ctx, "bk", in); err == nil {
		t.Fatal("put over a corrupt object")
	}
	raw, _, _ := st.c.read(ctx, st.stateObj("bk"))
	if string(raw) != "{broken" {
		t.Fatal("corrupt object overwritten")
	}
}

func testRefresh(t *testing.T, b backend) {
	ctx := context.Background()
	st := openRemote(t, b.url, RemoteOptions{RefreshEvery: 20 * time.Millisecond})
	lk, err := st.Lock(ctx, "refresh", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	first, _, err := st.readLock(ctx, st.lockObj("refresh"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, _, err := st.readLock(ctx, st.lockObj("refresh"))
		if err != nil {
			t.Fatal(err)
		}
		if cur.Refreshed.After(first.Refreshed) && cur.ID == lk.ID() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lock never refreshed")
		}
		time.Sleep(10 * time.Millisecond) // polling the object for the observable change
	}
	if err := lk.Unlock(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.readLock(ctx, st.lockObj("refresh")); !errors.Is(err, errNotFound) {
		t.Fatalf("lock object left after Unlock: %v", err)
	}
}

func testKeys(t *testing.T, b backend) {
	ctx := context.Background()
	st := openRemote(t, b.at("keys"), RemoteOptions{})
	keys := []string{"", "_default", "alice", "a/b", "ünï", "..", "x y", "%41"}
	for _, k := range keys {
		if err := st.Put(ctx, k, testInstance("k", pipeline.StatusComplete)); err != nil {
			t.Fatalf("put %q: %v", k, err)
		}
	}
	got, err := st.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]string(nil), keys...)
	sortStrings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("keys = %q, want %q", got, want)
	}
	for _, k := range keys {
		in, err := st.Get(ctx, k)
		if err != nil || in == nil || in.Key != k {
			t.Fatalf("get %q: %+v %v", k, in, err)
		}
	}
	if err := st.Delete(ctx, "a/b"); err != nil {
		t.Fatal(err)
	}
	if in, _ := st.Get(ctx, "a/b"); in != nil {
		t.Fatal("deleted instance still there")
	}
}

func sortStrings(s []string) {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
}

// TestConditionalDelete checks that removing an object at a stale version is refused. Unlock,
// force-unlock and breaking a dead pid's lock read the lock first and delete on condition that it
// did not change, so a lock taken meanwhile survives. AWS S3 (general purpose buckets, If-Match on
// DeleteObject, needing s3:GetObject too), GCS (ifGenerationMatch) and Azure (If-Match) enforce
// it; the two emulators used here do not (gofakes3 v1.2.0 deleteObject and fake-gcs-server
// v1.56.1 deleteObject ignore the precondition), so for them the window between that read and the
// delete is open in these tests, and this test only reports what they did.
func TestConditionalDelete(t *testing.T) {
	ctx := context.Background()
	for _, b := range testBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			st := openRemote(t, b.url, RemoteOptions{})
			obj := st.dir + "cond-delete.json"
			if err := st.c.create(ctx, obj, []byte(`{"v":1}`)); err != nil {
				t.Fatal(err)
			}
			_, stale, err := st.c.read(ctx, obj)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.c.replace(ctx, obj, []byte(`{"v":2}`), stale); err != nil {
				t.Fatal(err)
			}
			err = st.c.remove(ctx, obj, stale)
			_, _, rerr := st.c.read(ctx, obj)
			switch b.name {
			case "s3", "gcs":
				if b.deleteIfMatch != nil {
					if sent, _ := b.deleteIfMatch.Load().(string); sent != stale {
						t.Fatalf("DELETE carried If-Match %q, want %q", sent, stale)
					}
				}
				t.Logf("%s emulator: delete at a stale version returned %v; object still there: %v", b.name, err, rerr == nil)
			default:
				if !errors.Is(err, errPrecondition) || rerr != nil {
					t.Fatalf("delete at a stale version: %v (object still there: %v)", err, rerr == nil)
				}
			}
		})
	}
}

// testTimeoutPerOperation: one apply locking many keys that another runner holds waits its
// -lock-timeout once in all, and a key freed during the wait is taken.
func testTimeoutPerOperation(t *testing.T, b backend) {
	ctx := context.Background()
	holder := openRemote(t, b.url, RemoteOptions{})
	waiter := openRemote(t, b.url, RemoteOptions{RetryEvery: 20 * time.Millisecond})
	keys := []string{"t1", "t2", "t3", "t4", "t5", "t6"}
	var held []Lock
	for _, k := range keys {
		lk, err := holder.Lock(ctx, k, NewLockInfo("apply"), 0)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, lk)
	}
	op := NewLockInfo("apply")
	start := time.Now()
	for _, k := range keys {
		if _, err := waiter.Lock(ctx, k, op, 200*time.Millisecond); !IsLocked(err) {
			t.Fatalf("%s: %v", k, err)
		}
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 900*time.Millisecond {
		t.Fatalf("6 held keys took %v; want about one 200ms timeout (not 6 x 200ms)", d)
	}
	// A new operation waits afresh, and gets a key released while it waits.
	got := make(chan error, 1)
	go func() {
		lk, err := waiter.Lock(ctx, "t1", NewLockInfo("apply"), 10*time.Second)
		if err == nil {
			err = lk.Unlock()
		}
		got <- err
	}()
	if err := held[0].Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiting for a released lock: %v", err)
	}
	for _, lk := range held[1:] {
		lk.Unlock()
	}
}

// testKilledHolder: a runner killed -9 while holding a lock leaves the lock object behind; a rerun
// on the same machine sees that the pid is gone, breaks the lock and says so, while a runner on
// another machine would only be told (see testStaleLock).
func testKilledHolder(t *testing.T, b backend) {
	ctx := context.Background()
	cmd := helperCmd(t, "race-lock", b.url)
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	io.WriteString(stdin, "go\n")
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "won ") {
		t.Fatalf("holder: %q %v %s", line, err, stderr.String())
	}
	st := openRemote(t, b.url, RemoteOptions{})
	if _, err := st.Lock(ctx, "alice", NewLockInfo("apply"), 0); !IsLocked(err) {
		t.Fatalf("lock of a live holder: %v", err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	lk, err := st.Lock(ctx, "alice", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatalf("lock of a holder killed -9 on this machine: %v", err)
	}
	defer lk.Unlock()
	want := fmt.Sprintf("broke the lock %s of pid %d on this host", strings.TrimSpace(strings.TrimPrefix(line, "won ")), cmd.Process.Pid)
	if !strings.Contains(LockNote(lk), want) {
		t.Fatalf("note %q lacks %q", LockNote(lk), want)
	}
}

// testCache: the cache beside remote state is shared by runners, tolerates absence, refuses keys
// that leave it, and never touches state or lock objects, also while another runner holds locks.
func testCache(t *testing.T, b backend) {
	ctx := context.Background()
	url := b.at("cache") // once: file:// gives a new directory per call
	st := openRemote(t, url, RemoteOptions{})
	if err := st.Put(ctx, "alice", testInstance("x", pipeline.StatusComplete)); err != nil {
		t.Fatal(err)
	}
	holder := openRemote(t, url, RemoteOptions{})
	lk, err := holder.Lock(ctx, "alice", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	before, err := st.listAll(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	c := st.Cache()
	if data, ok, err := c.Get(ctx, "imagecheck/0123"); data != nil || ok || err != nil {
		t.Fatalf("missing entry: %q %v %v", data, ok, err)
	}
	for _, k := range []string{"imagecheck/0123", "replicate/schema/v1", "bob.state.json", "evil.state.json.lock"} {
		if err := c.Put(ctx, k, []byte("figures of "+k)); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	if err := c.Put(ctx, "imagecheck/0123", []byte("newer figures")); err != nil {
		t.Fatal(err)
	}
	// Another runner reads what this one wrote.
	data, ok, err := openRemote(t, url, RemoteOptions{}).Cache().Get(ctx, "imagecheck/0123")
	if err != nil || !ok || string(data) != "newer figures" {
		t.Fatalf("shared entry: %q %v %v", data, ok, err)
	}
	for _, k := range []string{"", "../x", "/abs", "a/../b", "a//b", "."} {
		if err := c.Put(ctx, k, []byte("x")); err == nil {
			t.Errorf("put of key %q accepted", k)
		}
		if _, _, err := c.Get(ctx, k); err == nil {
			t.Errorf("get of key %q accepted", k)
		}
	}
	after, err := st.listAll(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	old := map[string]bool{}
	for _, o := range before {
		old[o] = true
	}
	for _, o := range after {
		if !old[o] && !strings.HasPrefix(o, st.dir+".cache/") {
			t.Errorf("the cache wrote %s outside %s.cache/", o, st.dir)
		}
	}
	if keys, err := st.Keys(ctx); err != nil || fmt.Sprint(keys) != "[alice]" {
		t.Fatalf("cache entries listed as instances: %v %v", keys, err)
	}
	if in, err := st.Get(ctx, "alice"); err != nil || in.Serial != 1 {
		t.Fatalf("state changed by the cache: %+v %v", in, err)
	}
	// force-unlock by the prefix walks past the cache (a cache entry is never taken for a lock).
	admin, err := Open(ctx, url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.ForceUnlock(ctx, "nosuchid", false); err == nil || strings.Contains(err.Error(), "not a pipeline lock") ||
		!strings.Contains(err.Error(), lk.ID()) {
		t.Fatalf("force-unlock next to cache entries: %v", err)
	}
	if CacheOf(st) == nil {
		t.Fatal("CacheOf(remote) is nil")
	}
}
