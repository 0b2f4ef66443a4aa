package state

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// v1Fixture is a single-file state written by the release before per-instance state (see
// testdata/README.md).
const v1Fixture = "testdata/v1-retrain.state.json"

// fixtureInstances parses the fixture independently of FileStore: what a v1 reader sees.
func fixtureInstances(t *testing.T) (raw []byte, lineage string, serial uint64, inst map[string]*Instance) {
	t.Helper()
	raw, err := os.ReadFile(v1Fixture)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version   int                  `json:"version"`
		Lineage   string               `json:"lineage"`
		Serial    uint64               `json:"serial"`
		Instances map[string]*Instance `json:"instances"`
	}
	if err := json.Unmarshal(raw, &f); err != nil || f.Version != 1 || len(f.Instances) != 2 {
		t.Fatalf("fixture: version %d, %d instances, %v", f.Version, len(f.Instances), err)
	}
	for _, in := range f.Instances {
		in.compactRaw()
	}
	return raw, f.Lineage, f.Serial, f.Instances
}

// copyFixture puts the fixture where a config retrain.hcl in a temp dir keeps its state.
func copyFixture(t *testing.T) (config, file, dir string) {
	t.Helper()
	raw, _, _, _ := fixtureInstances(t)
	root := t.TempDir()
	config = filepath.Join(root, "retrain.hcl")
	file, dir = DefaultPath(config), DefaultDir(config)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return config, file, dir
}

// assertSameInstance compares every field of an instance, record by record.
func assertSameInstance(t *testing.T, key string, got, want *Instance) {
	t.Helper()
	if got == nil {
		t.Fatalf("instance %q lost", key)
	}
	if got.Key != want.Key || got.Lineage != want.Lineage || got.Serial != want.Serial || !bytes.Equal(got.Outputs, want.Outputs) {
		t.Errorf("instance %q: key %q lineage %s serial %d outputs %s; want %q %s %d %s", key, got.Key, got.Lineage, got.Serial, got.Outputs,
			want.Key, want.Lineage, want.Serial, want.Outputs)
	}
	if len(got.Records) != len(want.Records) {
		t.Errorf("instance %q: %d records, want %d", key, len(got.Records), len(want.Records))
	}
	for addr, w := range want.Records {
		if g := got.Records[addr]; !reflect.DeepEqual(g, w) {
			gj, _ := json.Marshal(g)
			wj, _ := json.Marshal(w)
			t.Errorf("instance %q record %s changed:\n got %s\nwant %s", key, addr, gj, wj)
		}
	}
}

// TestV1FixtureMigratesLosslessly: the state of today's release loads with every record intact,
// before and after its migration on the first write, and the old file is kept.
func TestV1FixtureMigratesLosslessly(t *testing.T) {
	ctx := context.Background()
	raw, lineage, serial, want := fixtureInstances(t)
	config, file, dir := copyFixture(t)

	// Without the batch flag the single file is the state, as before.
	plain, err := Open(ctx, "", config)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := plain.(*FileStore); !ok {
		t.Fatalf("Open of a v1 state without a batch = %T", plain)
	}
	plain.Close()

	st, err := OpenWith(ctx, "", config, OpenOptions{Batch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ds, ok := st.(*DirStore)
	if !ok || ds.Path() != dir || ds.Legacy() != file {
		t.Fatalf("OpenWith batch = %T %v", st, st.Describe())
	}
	// Reads (plan) come from the single file and change nothing.
	all, err := ReadAll(ctx, st, 4)
	if err != nil {
		t.Fatal(err)
	}
	for k, w := range want {
		assertSameInstance(t, k, all[k], w)
	}
	lk, err := st.Lock(ctx, "ana", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(file); !bytes.Equal(now, raw) {
		t.Fatal("reading or locking changed the single file")
	}
	if _, err := os.Stat(filepath.Join(dir, ".meta.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("locking migrated: only a write should")
	}

	// The first write migrates every instance, then writes its own.
	ana := all["ana"]
	ana.Records["prune.old"].Warnings = []string{"after the upgrade"}
	if err := st.Put(ctx, "ana", ana); err != nil {
		t.Fatal(err)
	}
	lk.Unlock()
	if ana.Serial != want["ana"].Serial+1 || ana.Lineage != lineage {
		t.Fatalf("ana written at serial %d lineage %s", ana.Serial, ana.Lineage)
	}
	kept, err := os.ReadFile(file + ".v1.backup")
	if err != nil || !bytes.Equal(kept, raw) {
		t.Fatalf("the single file was not kept as it was: %v", err)
	}
	var stub legacyStub
	b, _ := os.ReadFile(file)
	if err := json.Unmarshal(b, &stub); err != nil || stub.Version <= fileFormatVersion || stub.Directory != "retrain.state" ||
		stub.Backup != "retrain.state.json.v1.backup" {
		t.Fatalf("stub %s: %v", b, err)
	}
	var meta dirMeta
	b, _ = os.ReadFile(filepath.Join(dir, ".meta.json"))
	if err := json.Unmarshal(b, &meta); err != nil || meta.Lineage != lineage || meta.MigratedSerial != serial ||
		meta.MigratedInstances != 2 || meta.MigratedFrom != "retrain.state.json" || meta.MigratedBackup != "retrain.state.json.v1.backup" {
		t.Fatalf("meta %s: %v", b, err)
	}

	// Every other record is as it was; ana holds the v1 records plus the change. Open finds the
	// directory without being told about the batch.
	again, err := Open(ctx, "", config)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, ok := again.(*DirStore); !ok {
		t.Fatalf("Open after the migration = %T", again)
	}
	after, err := ReadAll(ctx, again, 4)
	if err != nil {
		t.Fatal(err)
	}
	assertSameInstance(t, "ben", after["ben"], want["ben"])
	wantAna := want["ana"].Clone()
	wantAna.Serial++
	wantAna.Records["prune.old"].Warnings = []string{"after the upgrade"}
	assertSameInstance(t, "ana", after["ana"], wantAna)

	// The single file is now a pointer: today's reader (version 1 only) refuses it instead of
	// starting afresh, and this release's FileStore says where the state went.
	if stub.Version <= 1 {
		t.Fatal("a v1 reader would not refuse the stub")
	}
	fs := openFile(t, file)
	if _, err := fs.Keys(ctx); err == nil || !strings.Contains(err.Error(), "migrated to one file per instance in "+dir) {
		t.Fatalf("FileStore on the stub: %v", err)
	}
	b, _ = os.ReadFile(file)
	if _, err := ParseSnapshot(b, file); err == nil || !strings.Contains(err.Error(), "state pull") {
		t.Fatalf("state push of the stub: %v", err)
	}
}

// TestMigrationCrashes: a migration killed before its meta file leaves the single file in charge
// and is redone; one killed after it leaves the directory in charge and the next write retires
// the single file. Nothing is lost either way.
func TestMigrationCrashes(t *testing.T) {
	ctx := context.Background()
	_, _, _, want := fixtureInstances(t)
	for _, step := range []string{"instances", "meta"} {
		t.Run(step, func(t *testing.T) {
			_, file, dir := copyFixture(t)
			raw, _ := os.ReadFile(file)
			out, err := helperCmd(t, "crash-migrate-"+step, file, "STATE_TEST_BATCH=1").CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("helper did not die at %s: %v\n%s", step, err, out)
			}
			if now, _ := os.ReadFile(file); !bytes.Equal(now, raw) {
				t.Fatal("a crashed migration changed the single file")
			}
			if step == "instances" {
				// A stray file beside the half-migrated ones must not turn into an instance.
				data, _ := encodeInstanceFile(testInstance("stray", pipeline.StatusRunning))
				os.WriteFile(filepath.Join(dir, "stray.json"), data, 0o600)
			}
			st := openDir(t, dir, file)
			all, err := ReadAll(ctx, st, 4)
			if err != nil {
				t.Fatal(err)
			}
			for k, w := range want {
				assertSameInstance(t, k, all[k], w)
			}
			if err := st.Put(ctx, "ben", all["ben"]); err != nil {
				t.Fatal(err)
			}
			if !isLegacyStub(file) {
				t.Fatal("the single file was not retired")
			}
			if kept, _ := os.ReadFile(file + ".v1.backup"); !bytes.Equal(kept, raw) {
				t.Fatal("the single file was not kept")
			}
			backups, _ := filepath.Glob(file + ".v1.backup*")
			if len(backups) != 1 {
				t.Fatalf("backups: %v", backups)
			}
			after, err := ReadAll(ctx, openDir(t, dir, file), 4)
			if err != nil {
				t.Fatal(err)
			}
			assertSameInstance(t, "ana", after["ana"], want["ana"])
			if len(after) != 2 {
				t.Fatalf("instances after the migration: %d", len(after))
			}
			if after["ben"].Serial != want["ben"].Serial+1 {
				t.Fatalf("ben at serial %d", after["ben"].Serial)
			}
		})
	}
}

func TestMigrationRefusesACorruptSingleFile(t *testing.T) {
	ctx := context.Background()
	_, file, dir := copyFixture(t)
	garbage := []byte("{\n  \"version\": 1,\n  \"instances\": {\"ana\": {\"records\": \n")
	os.WriteFile(file, garbage, 0o600)
	st := openDir(t, dir, file)
	err := st.Put(ctx, "ana", testInstance("x", pipeline.StatusComplete))
	if err == nil || !strings.Contains(err.Error(), file+" is corrupt") || !strings.Contains(err.Error(), file+".backup") {
		t.Fatalf("migrating a corrupt file: %v", err)
	}
	if now, _ := os.ReadFile(file); !bytes.Equal(now, garbage) {
		t.Fatal("corrupt single file overwritten")
	}
	if _, err := os.Stat(filepath.Join(dir, ".meta.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a failed migration wrote the meta file")
	}
}

// TestMigrationWaitsForTheSingleFilesLock: a process using the single file (an older release, or
// a command that did not know about the batch) holds FILE.lock; the directory cannot be taken
// from under it.
func TestMigrationWaitsForTheSingleFilesLock(t *testing.T) {
	ctx := context.Background()
	_, file, dir := copyFixture(t)
	cmd := helperCmd(t, "hold-lock", file)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || !strings.HasPrefix(line, "locked ") {
		t.Fatalf("child: %q %v", line, err)
	}
	st := openDir(t, dir, file)
	var le *LockedError
	_, err := st.Lock(ctx, "ana", NewLockInfo("apply"), 0)
	if !errors.As(err, &le) || le.Info.PID != cmd.Process.Pid || le.Path != file+".lock" {
		t.Fatalf("want a LockedError naming pid %d on %s.lock: %v", cmd.Process.Pid, file, err)
	}
	// Its own lock was released again: another process can take the directory.
	if out, err := helperCmd(t, "try-lock", dir+"/").CombinedOutput(); err != nil {
		t.Fatalf("directory lock left held: %v %s", err, out)
	}
}

// TestNewBatchStateLeavesAStub: a batch state that never had a single file still leaves one
// pointing at the directory, so an older release refuses it rather than start every training
// again.
func TestNewBatchStateLeavesAStub(t *testing.T) {
	ctx := context.Background()
	config := filepath.Join(t.TempDir(), "retrain.hcl")
	st, err := OpenWith(ctx, "", config, OpenOptions{Batch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Put(ctx, "ana", testInstance("x", pipeline.StatusComplete)); err != nil {
		t.Fatal(err)
	}
	if !isLegacyStub(DefaultPath(config)) {
		t.Fatal("no stub at the single file's path")
	}
	if _, err := os.Stat(DefaultPath(config) + ".v1.backup"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a backup of a file that never existed")
	}
	entries, _ := os.ReadDir(DefaultDir(config))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if strings.Join(names, " ") != ".lock .meta.json ana.json" {
		t.Fatalf("directory holds %v", names)
	}
}

func TestOpenChoosesTheLayout(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	config := filepath.Join(root, "cfg", "retrain.hcl")
	existing := filepath.Join(root, "existing")
	os.MkdirAll(existing, 0o755)
	migrated := filepath.Join(root, "m.state")
	os.MkdirAll(migrated, 0o755)
	os.WriteFile(filepath.Join(migrated, ".meta.json"), []byte(`{"version":2,"layout":"per-instance","lineage":"l"}`), 0o600)
	for _, c := range []struct {
		location       string
		batch          bool
		wantType, want string // the Describe
	}{
		{"", false, "file", filepath.Join(root, "cfg", ".pipeline", "retrain.state.json")},
		{"", true, "dir", filepath.Join(root, "cfg", ".pipeline", "retrain.state") + "/"},
		{filepath.Join(root, "ci.state.json"), false, "file", filepath.Join(root, "ci.state.json")},
		{filepath.Join(root, "ci.state.json"), true, "dir", filepath.Join(root, "ci.state") + "/"},
		{filepath.Join(root, "plain"), true, "dir", filepath.Join(root, "plain.d") + "/"},
		{existing, false, "dir", existing + "/"},
		{filepath.Join(root, "new") + "/", false, "dir", filepath.Join(root, "new") + "/"},
		{filepath.Join(root, "m.state.json"), false, "dir", migrated + "/"},
	} {
		st, err := OpenWith(ctx, c.location, config, OpenOptions{Batch: c.batch})
		if err != nil {
			t.Fatalf("%q batch %v: %v", c.location, c.batch, err)
		}
		prefix := map[string]string{"file": "local file ", "dir": "local directory "}[c.wantType]
		if st.Describe() != prefix+c.want {
			t.Errorf("%q batch %v: %s, want %s%s", c.location, c.batch, st.Describe(), prefix, c.want)
		}
		st.Close()
	}
}
