package state

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/pipeline"
)

func openDir(t *testing.T, dir, legacy string) *DirStore {
	t.Helper()
	st, err := OpenDir(dir, legacy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// assertOnlyInside fails when anything was created beside dir in its parent.
func assertOnlyInside(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Dir(dir))
	for _, e := range entries {
		if e.Name() != filepath.Base(dir) {
			t.Errorf("%s was created outside the state directory", e.Name())
		}
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != dir {
			t.Errorf("subdirectory %s in the state directory", p)
		}
		return nil
	})
}

func readInstanceFile(t *testing.T, path string) *Instance {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	in, err := decodeInstanceFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestDirPutGetBackupLineage(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "s.state")
	st := openDir(t, dir, "")
	if keys, err := st.Keys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("empty state: %v %v", keys, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("reading created the directory: %v", err)
	}
	lk, err := st.Lock(ctx, "ana", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	in := testInstance("lora", pipeline.StatusRunning)
	if err := st.Put(ctx, "ana", in); err != nil {
		t.Fatal(err)
	}
	if in.Serial != 1 || in.Lineage == "" || in.Key != "ana" {
		t.Fatalf("after Put: %+v", in)
	}
	path := filepath.Join(dir, "ana.json")
	if _, err := os.Stat(path + ".backup"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("first write made a backup: %v", err)
	}
	first, _ := os.ReadFile(path)
	in.Records["train.lora"].Status = pipeline.StatusComplete
	if err := st.Put(ctx, "ana", in); err != nil {
		t.Fatal(err)
	}
	backup, _ := os.ReadFile(path + ".backup")
	if in.Serial != 2 || !bytes.Equal(backup, first) {
		t.Fatalf("serial %d; backup is the previous file: %v", in.Serial, bytes.Equal(backup, first))
	}
	var plain Instance
	if err := json.Unmarshal(first, &plain); err != nil || plain.Key != "ana" {
		t.Fatalf("the instance file is not plain JSON a person can read: %q: %v", first[:min(len(first), 20)], err)
	}
	var meta dirMeta
	raw, _ := os.ReadFile(filepath.Join(dir, ".meta.json"))
	if err := json.Unmarshal(raw, &meta); err != nil || meta.Lineage != in.Lineage || meta.Version != 2 || meta.Layout != "per-instance" {
		t.Fatalf("meta %s: %v", raw, err)
	}
	if err := st.Put(ctx, "bob", testInstance("x", pipeline.StatusComplete)); err != nil {
		t.Fatal(err)
	}
	if err := lk.Unlock(); err != nil {
		t.Fatal(err)
	}

	// Another store (another process, in effect) reads the same; Get returns a copy.
	st2 := openDir(t, dir, "")
	got, err := st2.Get(ctx, "ana")
	if err != nil {
		t.Fatal(err)
	}
	r := got.Records["train.lora"]
	if got.Serial != 2 || got.Lineage != in.Lineage || r.Status != pipeline.StatusComplete || string(r.Data) != `{"training_id":"t-lora"}` ||
		!r.StartedAt.Equal(time.Unix(1700000000, 0)) {
		t.Fatalf("read back %+v / %+v", got, r)
	}
	got.Records["train.lora"].Status = pipeline.StatusFailed
	if again, _ := st2.Get(ctx, "ana"); again.Records["train.lora"].Status != pipeline.StatusComplete {
		t.Fatal("modifying a Get result changed the store")
	}
	if l, _ := st2.Lineage(); l != in.Lineage {
		t.Fatalf("lineage %s, want %s", l, in.Lineage)
	}
	bob, _ := st2.Get(ctx, "bob")
	if bob.Lineage != in.Lineage {
		t.Fatalf("instances of one directory have lineages %s and %s", bob.Lineage, in.Lineage)
	}
	// Delete keeps the last version as the backup, and serials keep growing after it.
	if err := st2.Delete(ctx, "ana"); err != nil {
		t.Fatal(err)
	}
	if keys, _ := openDir(t, dir, "").Keys(ctx); strings.Join(keys, ",") != "bob" {
		t.Fatalf("keys after delete = %v", keys)
	}
	if kept := readInstanceFile(t, path+".backup"); kept.Serial != 2 {
		t.Fatalf("backup after delete has serial %d", kept.Serial)
	}
	again := testInstance("new", pipeline.StatusComplete)
	if err := openDir(t, dir, "").Put(ctx, "ana", again); err != nil || again.Serial != 3 {
		t.Fatalf("put after delete: serial %d, %v", again.Serial, err)
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(entries) != 0 {
		t.Fatalf("temp files left: %v", entries)
	}
}

func TestDirCrashBeforeRenameKeepsOldInstance(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "s.state")
	st := openDir(t, dir, "")
	if err := st.Put(ctx, "k", testInstance("before", pipeline.StatusComplete)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "k.json")
	before, _ := os.ReadFile(path)
	out, err := helperCmd(t, "crash-before-rename", dir+"/").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper did not die by SIGKILL before the rename: %v\n%s", err, out)
	}
	if temps, _ := filepath.Glob(filepath.Join(dir, ".k.json.tmp-*")); len(temps) != 1 {
		t.Fatalf("want the crashed writer's temp file left behind, got %v", temps)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("instance changed by a crashed write")
	}
	st2 := openDir(t, dir, "")
	if in, err := st2.Get(ctx, "k"); err != nil || in.Records["train.before"] == nil {
		t.Fatalf("old instance unreadable after the crash: %v %+v", err, in)
	}
	// The crashed write had already linked the file as its own backup: deleting it still works.
	if err := st2.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if in, err := openDir(t, dir, "").Get(ctx, "k"); in != nil || err != nil {
		t.Fatalf("deleted after a crashed write: %+v %v", in, err)
	}
	if err := st2.Put(ctx, "k", testInstance("next", pipeline.StatusComplete)); err != nil {
		t.Fatal(err)
	}
	if temps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(temps) != 0 {
		t.Fatalf("stale temp files not cleaned: %v", temps)
	}
}

func TestDirLockBetweenProcessesAndKeys(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), ".pipeline", "s.state")
	st := openDir(t, dir, "")
	a, err := st.Lock(ctx, "alice", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.Lock(ctx, "bob", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Lock(ctx, "alice", NewLockInfo("apply"), 0); !IsLocked(err) {
		t.Fatalf("second lock of alice in one process: %v", err)
	}
	out, err := helperCmd(t, "try-lock", dir+"/").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Fatalf("second process: %v\n%s", err, out)
	}
	host, _ := os.Hostname()
	want := fmt.Sprintf("state is locked by pid %d on host %s since ", os.Getpid(), host)
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), "lock "+filepath.Join(dir, ".lock")) {
		t.Fatalf("second process error does not name the holder and the lock file:\n%s", out)
	}
	a.Unlock()
	if _, err := helperCmd(t, "try-lock", dir+"/").CombinedOutput(); err == nil {
		t.Fatal("OS lock released while bob is held")
	}
	b.Unlock()
	if out, err := helperCmd(t, "try-lock", dir+"/").CombinedOutput(); err != nil {
		t.Fatalf("OS lock not released after the last Unlock: %v %s", err, out)
	}

	// A child holds it: we are refused with its pid, and a Put without the lock is refused too.
	cmd := helperCmd(t, "hold-lock", dir+"/")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || !strings.HasPrefix(line, "locked ") {
		t.Fatalf("child: %q %v", line, err)
	}
	var le *LockedError
	if _, err := st.Lock(ctx, "", NewLockInfo("apply"), 0); !errors.As(err, &le) || le.Info.PID != cmd.Process.Pid {
		t.Fatalf("want a LockedError naming pid %d, got %v", cmd.Process.Pid, err)
	}
	if err := st.Put(ctx, "x", testInstance("x", pipeline.StatusComplete)); !IsLocked(err) {
		t.Fatalf("Put while another process holds the lock: %v", err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	lk, err := st.Lock(ctx, "", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatalf("lock of a killed process was not released by the OS: %v", err)
	}
	lk.Unlock()
	if err := st.ForceUnlock(ctx, "x", false); err == nil || !strings.Contains(err.Error(), "OS file lock") {
		t.Fatalf("ForceUnlock: %v", err)
	}
}

// TestDirPutsRunInParallel: Puts of different instances do not wait for each other. Each writer
// stops before its rename until 4 writers are inside at once; serialised Puts would never get
// there.
func TestDirPutsRunInParallel(t *testing.T) {
	ctx := context.Background()
	st := openDir(t, filepath.Join(t.TempDir(), "s.state"), "")
	lk, err := st.Lock(ctx, "", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	if err := st.Put(ctx, "warm-up", testInstance("x", pipeline.StatusComplete)); err != nil {
		t.Fatal(err) // creates the meta file outside the measured writes
	}
	const n = 4
	var mu sync.Mutex
	inside := 0
	all := make(chan struct{})
	testHookDirBeforeRename = func(string) {
		mu.Lock()
		if inside++; inside == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			t.Error("Puts of different instances did not run at the same time")
		}
	}
	defer func() { testHookDirBeforeRename = nil }()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := st.Put(ctx, fmt.Sprintf("k%d", i), testInstance("x", pipeline.StatusComplete)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

// TestDirPutCostDoesNotGrow: recording one transition writes one instance's bytes, whether the
// state holds 10 instances or 1,000.
func TestDirPutCostDoesNotGrow(t *testing.T) {
	ctx := context.Background()
	cost := func(n int) (files, bytes, want int64) {
		st := openDir(t, filepath.Join(t.TempDir(), "s.state"), "")
		lk, err := st.Lock(ctx, "", NewLockInfo("apply"), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer lk.Unlock()
		runBounded(subjectKeys(n), 16, func(k string) {
			if err := st.Put(ctx, k, inFlight("subject-0000")); err != nil {
				t.Error(err)
			}
		})
		w0, b0 := st.writes.Load(), st.bytesWritten.Load()
		one := inFlight("subject-0000")
		if err := st.Put(ctx, "subject-0000", one); err != nil {
			t.Fatal(err)
		}
		own, _ := encodeInstanceFile(one) // what that one instance is, as written
		return st.writes.Load() - w0, st.bytesWritten.Load() - b0, int64(len(own))
	}
	w10, b10, own10 := cost(10)
	w1000, b1000, own1000 := cost(1000)
	t.Logf("one Put: %d file(s), %d bytes at 10 instances; %d file(s), %d bytes at 1,000", w10, b10, w1000, b1000)
	if w10 != 1 || w1000 != 1 || b10 != own10 || b1000 != own1000 {
		t.Fatalf("one Put wrote %d files/%d bytes at 10 instances, %d/%d at 1,000; the instance alone is %d/%d bytes",
			w10, b10, w1000, b1000, own10, own1000)
	}
}

func subjectKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("subject-%04d", i)
	}
	return keys
}

func TestDirCorruptInstanceIsNeverOverwritten(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "s.state")
	st := openDir(t, dir, "")
	for _, name := range []string{"a", "b"} {
		if err := st.Put(ctx, "k", testInstance(name, pipeline.StatusComplete)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "k.json")
	for name, garbage := range map[string][]byte{"truncated gzip": {0x1f, 0x8b, 8, 0}, "bad json": []byte(`{"records":`), "empty": nil} {
		if err := os.WriteFile(path, garbage, 0o600); err != nil {
			t.Fatal(err)
		}
		st2 := openDir(t, dir, "")
		_, err := st2.Get(ctx, "k")
		if err == nil || !strings.Contains(err.Error(), path+" is corrupt") || !strings.Contains(err.Error(), path+".backup") ||
			!strings.Contains(err.Error(), "left untouched") {
			t.Fatalf("%s: %v", name, err)
		}
		if err := st2.Put(ctx, "k", testInstance("c", pipeline.StatusComplete)); err == nil || !strings.Contains(err.Error(), "corrupt") {
			t.Fatalf("%s: Put over a corrupt file: %v", name, err)
		}
		if now, _ := os.ReadFile(path); !bytes.Equal(now, garbage) {
			t.Fatalf("%s: corrupt file was overwritten", name)
		}
	}
	// The backup named in the message is the good previous version.
	if kept := readInstanceFile(t, path+".backup"); kept.Serial != 1 || kept.Records["train.a"] == nil {
		t.Fatalf("backup: %+v", kept)
	}
	// Other instances are not affected; a broken meta file is reported by name.
	if err := st.Put(ctx, "other", testInstance("x", pipeline.StatusComplete)); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, ".meta.json"), []byte("{"), 0o600)
	if _, err := openDir(t, dir, "").Get(ctx, "other"); err == nil || !strings.Contains(err.Error(), ".meta.json is corrupt") {
		t.Fatalf("corrupt meta: %v", err)
	}
	os.WriteFile(filepath.Join(dir, ".meta.json"), []byte(`{"version":3,"layout":"per-instance","lineage":"x"}`), 0o600)
	if _, err := openDir(t, dir, "").Keys(ctx); err == nil || !strings.Contains(err.Error(), "format version 3") {
		t.Fatalf("future meta: %v", err)
	}
}

func TestDirReadableByHandAndHashedNames(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "s.state")
	st := openDir(t, dir, "")
	long := strings.Repeat("subject-", 40)
	if err := st.Put(ctx, long, testInstance("x", pipeline.StatusComplete)); err != nil {
		t.Fatal(err)
	}
	// A plain JSON file (a backup unpacked by hand, say) is read as well as a compressed one.
	if err := os.WriteFile(filepath.Join(dir, "hand.json"), []byte(`{"key":"hand","serial":4,"records":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := st.Keys(ctx)
	if err != nil || fmt.Sprint(keys) != fmt.Sprint([]string{"hand", long}) {
		t.Fatalf("keys %q %v", keys, err)
	}
	if in, err := st.Get(ctx, "hand"); err != nil || in.Serial != 4 {
		t.Fatalf("hand-written file: %+v %v", in, err)
	}
	// A hashed name whose content names another key is not silently that key.
	name := keyName(long) + ".json"
	data, _ := encodeInstanceFile(&Instance{Key: "someone-else"})
	os.WriteFile(filepath.Join(dir, name), data, 0o600)
	if _, err := st.Get(ctx, long); err == nil || !strings.Contains(err.Error(), `holds instance "someone-else"`) {
		t.Fatalf("mismatched hashed file: %v", err)
	}
}

func TestLocalCacheBesideTheState(t *testing.T) {
	ctx := context.Background()
	config := filepath.Join(t.TempDir(), "retrain.hcl")
	want := pipeline.DirCache(filepath.Join(filepath.Dir(config), ".pipeline", "cache"))
	for _, batch := range []bool{false, true} {
		st, err := OpenWith(ctx, "", config, OpenOptions{Batch: batch})
		if err != nil {
			t.Fatal(err)
		}
		if got := CacheOf(st); got != want {
			t.Errorf("batch %v: cache %v, want %v", batch, got, want)
		}
		st.Close()
	}
	st := openDir(t, filepath.Join(t.TempDir(), "ci", "state")+"/", "")
	if got := CacheOf(st); string(got.(pipeline.DirCache)) != filepath.Join(filepath.Dir(st.Path()), "cache") {
		t.Errorf("cache of an explicit directory: %v", got)
	}
}
