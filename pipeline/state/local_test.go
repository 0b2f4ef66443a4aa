package state

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// TestMain lets tests re-exec the test binary as a second process (STATE_TEST_HELPER=mode).
func TestMain(m *testing.M) {
	if mode := os.Getenv("STATE_TEST_HELPER"); mode != "" {
		os.Exit(runHelper(mode, os.Getenv("STATE_TEST_PATH")))
	}
	os.Exit(m.Run())
}

// runHelper is the second process. Exit 4 means "locked", as the CLI maps it.
func runHelper(mode, path string) int {
	ctx := context.Background()
	st, err := OpenWith(ctx, path, "unused.hcl", OpenOptions{Batch: os.Getenv("STATE_TEST_BATCH") != ""})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	switch mode {
	case "try-lock":
		lk, err := st.Lock(ctx, "", NewLockInfo("apply"), 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			if IsLocked(err) {
				return 4
			}
			return 1
		}
		fmt.Println("acquired " + lk.ID())
		return 0
	case "hold-lock":
		lk, err := st.Lock(ctx, "", NewLockInfo("apply"), 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("locked " + lk.ID())
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // hold until the parent says or kills us
		return 0
	case "crash-before-rename":
		testHookBeforeRename = func(string) { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL) }
		testHookDirBeforeRename = testHookBeforeRename
		err := st.Put(ctx, "k", testInstance("crashed", pipeline.StatusRunning))
		fmt.Fprintln(os.Stderr, "survived the crash hook:", err)
		return 1
	case "crash-migrate-instances", "crash-migrate-meta":
		step := strings.TrimPrefix(mode, "crash-migrate-")
		testHookMigrate = func(s string) {
			if s == step {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
		err := st.Put(ctx, "ana", testInstance("crashed", pipeline.StatusRunning))
		fmt.Fprintln(os.Stderr, "survived the crash hook:", err)
		return 1
	}
	return remoteHelper(ctx, mode, st)
}

func testInstance(name string, status pipeline.Status) *Instance {
	in := &Instance{}
	in.SetRecord(&Record{Kind: "train", Name: name, Status: status, InputDigest: "sha256:" + name,
		Data: json.RawMessage(`{"training_id":"t-` + name + `"}`), StartedAt: time.Unix(1700000000, 0).UTC()})
	return in
}

func helperCmd(t *testing.T, mode, path string, extraEnv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "STATE_TEST_HELPER="+mode, "STATE_TEST_PATH="+path)
	cmd.Env = append(cmd.Env, extraEnv...)
	return cmd
}

func openFile(t *testing.T, path string) *FileStore {
	t.Helper()
	st, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestDefaultPathAndOpen(t *testing.T) {
	if got, want := DefaultPath("examples/retrain.hcl"), filepath.Join("examples", ".pipeline", "retrain.state.json"); got != want {
		t.Fatalf("DefaultPath = %q, want %q", got, want)
	}
	dir := t.TempDir()
	st, err := Open(context.Background(), "", filepath.Join(dir, "x.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if want := "local file " + filepath.Join(dir, ".pipeline", "x.state.json"); st.Describe() != want {
		t.Fatalf("Describe = %q, want %q", st.Describe(), want)
	}
	for loc, want := range map[string]bool{"s3://b/p": true, "file:///tmp/x": true, "mem://": true, "./a/b.json": false, "C:x": false, "a://b": true, "://x": false} {
		if IsURL(loc) != want {
			t.Errorf("IsURL(%q) = %v", loc, !want)
		}
	}
}

func TestMissingFileIsEmptyState(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".pipeline", "a.state.json")
	st := openFile(t, path)
	ctx := context.Background()
	keys, err := st.Keys(ctx)
	if err != nil || len(keys) != 0 {
		t.Fatalf("Keys = %v, %v; want empty", keys, err)
	}
	in, err := st.Get(ctx, "")
	if in != nil || err != nil {
		t.Fatalf("Get = %v, %v; want nil, nil", in, err)
	}
	lin, _ := st.Lineage()
	if len(lin) != 36 {
		t.Fatalf("lineage %q is not a UUID", lin)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reading created the state file: %v", err)
	}
}

func TestPutAtomicWithBackup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.state.json")
	ctx := context.Background()
	st := openFile(t, path)
	lk, err := st.Lock(ctx, "", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	in := testInstance("lora", pipeline.StatusRunning)
	if err := st.Put(ctx, "", in); err != nil {
		t.Fatal(err)
	}
	if in.Serial != 1 || in.Lineage == "" {
		t.Fatalf("after Put: serial %d lineage %q", in.Serial, in.Lineage)
	}
	if _, err := os.Stat(path + ".backup"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("first write made a backup: %v", err)
	}
	first, _ := os.ReadFile(path)
	in.Records["train.lora"].Status = pipeline.StatusComplete
	in.Records["train.lora"].Outputs = json.RawMessage(`{"value":{"version":"v1"},"type":["object",{"version":"string"}]}`)
	if err := st.Put(ctx, "", in); err != nil {
		t.Fatal(err)
	}
	if in.Serial != 2 {
		t.Fatalf("serial after second Put = %d, want 2", in.Serial)
	}
	backup, err := os.ReadFile(path + ".backup")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(backup, first) {
		t.Fatalf("backup is not the previous file:\n%s\nwant\n%s", backup, first)
	}
	var sf stateFile
	raw, _ := os.ReadFile(path)
	if err := json.Unmarshal(raw, &sf); err != nil {
		t.Fatalf("state file is not JSON: %v\n%s", err, raw)
	}
	if sf.Version != 1 || sf.Serial != 2 || sf.Lineage != in.Lineage || len(sf.Instances) != 1 {
		t.Fatalf("file header: %+v", sf)
	}
	if err := lk.Unlock(); err != nil {
		t.Fatal(err)
	}
	matches, _ := filepath.Glob(path + ".tmp-*")
	if len(matches) != 0 {
		t.Fatalf("temp files left: %v", matches)
	}

	// A fresh store (another process, in effect) reads the same thing back.
	st2 := openFile(t, path)
	got, err := st2.Get(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	r := got.Records["train.lora"]
	if got.Serial != 2 || got.Lineage != in.Lineage || r.Status != pipeline.StatusComplete || string(r.Data) != `{"training_id":"t-lora"}` ||
		!r.StartedAt.Equal(time.Unix(1700000000, 0)) {
		t.Fatalf("read back %+v / %+v", got, r)
	}
	// Get returns a copy.
	got.Records["train.lora"].Status = pipeline.StatusFailed
	again, _ := st2.Get(ctx, "")
	if again.Records["train.lora"].Status != pipeline.StatusComplete {
		t.Fatal("modifying a Get result changed the store")
	}
	// Put without Lock takes the lock for the write; serials keep growing; Delete works.
	if err := st2.Put(ctx, "b", testInstance("x", pipeline.StatusComplete)); err != nil {
		t.Fatal(err)
	}
	if err := st2.Delete(ctx, ""); err != nil {
		t.Fatal(err)
	}
	keys, _ := openFile(t, path).Keys(ctx)
	if strings.Join(keys, ",") != "b" {
		t.Fatalf("keys after delete = %v", keys)
	}
}

func TestCrashBeforeRenameKeepsOldState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.state.json")
	ctx := context.Background()
	st := openFile(t, path)
	if err := st.Put(ctx, "k", testInstance("before", pipeline.StatusComplete)); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)

	cmd := helperCmd(t, "crash-before-rename", path)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper did not die by SIGKILL before the rename: %v\n%s", err, out)
	}
	temps, _ := filepath.Glob(path + ".tmp-*")
	if len(temps) != 1 {
		t.Fatalf("want the crashed writer's temp file left behind, got %v", temps)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatalf("state changed by a crashed write:\n%s", after)
	}
	st2 := openFile(t, path)
	in, err := st2.Get(ctx, "k")
	if err != nil || in == nil || in.Records["train.before"] == nil {
		t.Fatalf("old state unreadable after crash: %v %+v", err, in)
	}
	// The next lock holder removes the debris and writes normally.
	if err := st2.Put(ctx, "k", testInstance("next", pipeline.StatusComplete)); err != nil {
		t.Fatal(err)
	}
	temps, _ = filepath.Glob(path + ".tmp-*")
	if len(temps) != 0 {
		t.Fatalf("stale temp files not cleaned: %v", temps)
	}
}

func TestLockContentionBetweenProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".pipeline", "s.state.json")
	ctx := context.Background()

	// We hold it: a second process is refused with our pid.
	st := openFile(t, path)
	lk, err := st.Lock(ctx, "", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	out, err := helperCmd(t, "try-lock", path).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Fatalf("second process: %v\n%s", err, out)
	}
	host, _ := os.Hostname()
	want := fmt.Sprintf("state is locked by pid %d on host %s since ", os.Getpid(), host)
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), "(lock ID "+lk.ID()+")") || !strings.Contains(string(out), "-lock-timeout") {
		t.Fatalf("second process error does not name the holder:\n%s\nwant %q", out, want)
	}
	if err := lk.Unlock(); err != nil {
		t.Fatal(err)
	}
	out, err = helperCmd(t, "try-lock", path).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "acquired ") {
		t.Fatalf("lock not released: %v\n%s", err, out)
	}

	// A child holds it: we are refused with its pid, and get it once the child is killed -9.
	cmd := helperCmd(t, "hold-lock", path)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "locked ") {
		t.Fatalf("child: %q %v", line, err)
	}
	childID := strings.TrimSpace(strings.TrimPrefix(line, "locked "))
	_, err = st.Lock(ctx, "", NewLockInfo("apply"), 0)
	var le *LockedError
	if !errors.As(err, &le) || le.Info.PID != cmd.Process.Pid || le.Info.ID != childID || le.Stale || le.Path != path+".lock" {
		t.Fatalf("want LockedError naming child pid %d id %s, got %#v (%v)", cmd.Process.Pid, childID, le, err)
	}
	// With a timeout we wait, and a put without the lock is refused too.
	start := time.Now()
	_, err = st.Lock(ctx, "", NewLockInfo("apply"), 150*time.Millisecond)
	if !IsLocked(err) || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("Lock with timeout: %v after %v", err, time.Since(start))
	}
	// One operation locking many keys with one lock ID waits its timeout once, not once per key
	// (once per key would be 6 x 200ms).
	many := NewLockInfo("apply")
	start = time.Now()
	for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
		if _, err := st.Lock(ctx, k, many, 200*time.Millisecond); !IsLocked(err) {
			t.Fatalf("key %s: %v", k, err)
		}
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 900*time.Millisecond {
		t.Fatalf("6 keys of one operation took %v; want one 200ms wait", d)
	}
	if err := st.Put(ctx, "x", testInstance("x", pipeline.StatusComplete)); !IsLocked(err) {
		t.Fatalf("Put while another process holds the lock: %v", err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	lk, err = st.Lock(ctx, "", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatalf("lock of a killed process was not released by the OS: %v", err)
	}
	lk.Unlock()
	if err := st.ForceUnlock(ctx, childID, false); err == nil || !strings.Contains(err.Error(), "OS file lock") {
		t.Fatalf("ForceUnlock on a local store: %v", err)
	}
}

func TestLockPerKeyInProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.state.json")
	ctx := context.Background()
	st := openFile(t, path)
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
	got := make(chan error, 1)
	go func() {
		lk, err := st.Lock(ctx, "alice", NewLockInfo("apply"), 10*time.Second)
		if err == nil {
			err = lk.Unlock()
		}
		got <- err
	}()
	if err := a.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiting lock: %v", err)
	}
	// The OS lock is still held for bob.
	if out, err := helperCmd(t, "try-lock", path).CombinedOutput(); err == nil {
		t.Fatalf("OS lock released while bob is held: %s", out)
	}
	b.Unlock()
	if out, err := helperCmd(t, "try-lock", path).CombinedOutput(); err != nil {
		t.Fatalf("OS lock not released after the last Unlock: %v %s", err, out)
	}
}

func TestGroupCommit200ConcurrentPuts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.state.json")
	ctx := context.Background()
	st := openFile(t, path)
	lk, err := st.Lock(ctx, "", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "subject-" + strconv.Itoa(i)
			in := testInstance("lora", pipeline.StatusRunning)
			if err := st.Put(ctx, key, in); err != nil {
				errs <- err
				return
			}
			// Read-modify-write of our own instance while 199 others write theirs.
			got, err := st.Get(ctx, key)
			if err != nil || got == nil {
				errs <- fmt.Errorf("%s: read back %v %v", key, got, err)
				return
			}
			got.Records["train.lora"].Status = pipeline.StatusComplete
			got.Records["train.lora"].Data = json.RawMessage(strconv.Quote(key))
			if err := st.Put(ctx, key, got); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st.mu.Lock()
	writes := st.writes
	st.mu.Unlock()
	t.Logf("%d Puts took %d file writes", 2*n, writes)
	if writes >= 2*n {
		t.Errorf("no group commit: %d writes for %d Puts", writes, 2*n)
	}
	// Every update is in the file, as another process would read it.
	other := openFile(t, path)
	keys, err := other.Keys(ctx)
	if err != nil || len(keys) != n {
		t.Fatalf("keys: %d %v", len(keys), err)
	}
	for _, k := range keys {
		in, err := other.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		r := in.Records["train.lora"]
		if in.Serial != 2 || r.Status != pipeline.StatusComplete || string(r.Data) != strconv.Quote(k) {
			t.Fatalf("%s: lost update: serial %d status %s data %s", k, in.Serial, r.Status, r.Data)
		}
	}
}

func TestCorruptFileIsNeverOverwritten(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.state.json")
	ctx := context.Background()
	st := openFile(t, path)
	for _, name := range []string{"a", "b"} {
		if err := st.Put(ctx, "", testInstance(name, pipeline.StatusComplete)); err != nil {
			t.Fatal(err)
		}
	}
	garbage := []byte("{\n  \"version\": 1,\n  \"instances\": {\"\": {\"records\": \n")
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	st2 := openFile(t, path)
	_, err := st2.Get(ctx, "")
	if err == nil {
		t.Fatal("corrupt file read without error")
	}
	msg := err.Error()
	for _, want := range []string{path + " is corrupt", "line 4", path + ".backup", "left untouched"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if err := st2.Put(ctx, "", testInstance("c", pipeline.StatusComplete)); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Put over a corrupt file: %v", err)
	}
	if _, err := st2.Lock(ctx, "", NewLockInfo("apply"), 0); err == nil {
		t.Fatal("Lock over a corrupt file succeeded")
	}
	now, _ := os.ReadFile(path)
	if !bytes.Equal(now, garbage) {
		t.Fatal("corrupt file was overwritten")
	}
	// The backup named in the message is the good previous state.
	var sf stateFile
	b, _ := os.ReadFile(path + ".backup")
	if err := json.Unmarshal(b, &sf); err != nil || sf.Serial != 1 {
		t.Fatalf("backup: %v serial %d", err, sf.Serial)
	}
	// Other kinds of damage.
	for name, content := range map[string]string{"empty": "", "not state": `{"a":1}`, "bad instance": `{"version":1,"instances":{"k":{"records":"x"}}}`} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := openFile(t, p).Keys(ctx); err == nil || !strings.Contains(err.Error(), "is corrupt") {
			t.Errorf("%s: %v", name, err)
		}
	}
	p := filepath.Join(dir, "future.json")
	os.WriteFile(p, []byte(`{"version":7,"instances":{}}`), 0o600)
	if _, err := openFile(t, p).Keys(ctx); err == nil || !strings.Contains(err.Error(), "version 7") {
		t.Errorf("future version: %v", err)
	}
}

func TestReaderSeesOtherWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.state.json")
	ctx := context.Background()
	reader, writer := openFile(t, path), openFile(t, path)
	if in, _ := reader.Get(ctx, "k"); in != nil {
		t.Fatal("unexpected instance")
	}
	if err := writer.Put(ctx, "k", testInstance("x", pipeline.StatusComplete)); err != nil {
		t.Fatal(err)
	}
	in, err := reader.Get(ctx, "k")
	if err != nil || in == nil {
		t.Fatalf("reader did not see the other store's write: %v", err)
	}
	l1, _ := reader.Lineage()
	l2, _ := writer.Lineage()
	if l1 != l2 {
		t.Fatalf("lineage %s vs %s", l1, l2)
	}
}

func TestLockedErrorMessage(t *testing.T) {
	created := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
	e := &LockedError{Info: LockInfo{ID: "abc", PID: 42, Host: "ci-1", Created: created, Operation: "apply"}}
	want := "state is locked by pid 42 on host ci-1 since 2026-11-25T14:00:00Z (lock ID abc)"
	if !strings.HasPrefix(e.Error(), want) || !strings.Contains(e.Error(), "-lock-timeout") {
		t.Fatalf("%q", e.Error())
	}
	e.Stale, e.TTL, e.Age, e.Unlock = true, 15*time.Minute, 20*time.Minute, "pipeline force-unlock -state mem://x abc"
	if !strings.Contains(e.Error(), "pipeline force-unlock -state mem://x abc") || !strings.Contains(e.Error(), "20m0s") {
		t.Fatalf("%q", e.Error())
	}
}
