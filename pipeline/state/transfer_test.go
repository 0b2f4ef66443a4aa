package state

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// inFlight is an instance whose training was started and must be re-attached, never paid twice.
func inFlight(key string) *Instance {
	in := &Instance{Outputs: json.RawMessage(`{"value":{},"type":["object",{}]}`)}
	in.SetRecord(&Record{Kind: "image_check", Name: "photos", Status: pipeline.StatusComplete, InputDigest: "sha256:aa",
		Outputs: json.RawMessage(`{"value":{"count":12},"type":["object",{"count":"number"}]}`)})
	in.SetRecord(&Record{Kind: "train", Name: "lora", Status: pipeline.StatusRunning, InputDigest: "sha256:bb",
		Inputs:      map[string]json.RawMessage{"lora_rank": json.RawMessage(`16`)},
		DigestParts: map[string]string{"lora_rank": "sha256:cc"},
		Data:        json.RawMessage(`{"intent_at":"2026-11-25T14:00:00Z","training_id":"tr-` + key + `"}`),
		StartedAt:   time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)})
	return in
}

func TestMigrateLocalToRemoteKeepsInFlightTrainings(t *testing.T) {
	ctx := context.Background()
	local := openFile(t, filepath.Join(t.TempDir(), ".pipeline", "retrain.state.json"))
	keys := []string{"alice", "bob", "carol"}
	for _, k := range keys {
		if err := local.Put(ctx, k, inFlight(k)); err != nil {
			t.Fatal(err)
		}
	}
	lineage, _ := local.Lineage()
	for _, b := range testBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			remote := openRemote(t, b.url, RemoteOptions{})
			if err := Migrate(ctx, local, remote); err != nil {
				t.Fatal(err)
			}
			got, err := remote.Keys(ctx)
			if err != nil || strings.Join(got, ",") != "alice,bob,carol" {
				t.Fatalf("keys %v %v", got, err)
			}
			for _, k := range keys {
				in, err := remote.Get(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				tr := in.Records["train.lora"]
				if tr.Status != pipeline.StatusRunning || !strings.Contains(string(tr.Data), `"training_id":"tr-`+k+`"`) ||
					in.Lineage != lineage || string(tr.Inputs["lora_rank"]) != "16" || !tr.StartedAt.Equal(time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)) {
					t.Fatalf("%s migrated as %+v / %+v", k, in, tr)
				}
			}
			// Both sides were unlocked afterwards.
			for _, st := range []Store{local, remote} {
				lk, err := st.Lock(ctx, "alice", NewLockInfo("check"), 0)
				if err != nil {
					t.Fatalf("%s still locked: %v", st.Describe(), err)
				}
				lk.Unlock()
			}
			// Again: identical instances are skipped, a diverged one is refused.
			if err := Migrate(ctx, local, remote); err != nil {
				t.Fatalf("second migration: %v", err)
			}
			in, _ := remote.Get(ctx, "bob")
			in.Records["train.lora"].Status = pipeline.StatusComplete
			if err := remote.Put(ctx, "bob", in); err != nil {
				t.Fatal(err)
			}
			if err := Migrate(ctx, local, remote); err == nil || !strings.Contains(err.Error(), `"bob"`) {
				t.Fatalf("migration over a diverged instance: %v", err)
			}
		})
	}
}

func TestMigrateRefusesWhileSourceLocked(t *testing.T) {
	ctx := context.Background()
	url := fmt.Sprintf("mem://migrate-%d", memSeq.Add(1))
	from, to := openRemote(t, url+"/from", RemoteOptions{}), openRemote(t, url+"/to", RemoteOptions{})
	if err := from.Put(ctx, "alice", inFlight("alice")); err != nil {
		t.Fatal(err)
	}
	other := openRemote(t, url+"/from", RemoteOptions{})
	lk, err := other.Lock(ctx, "alice", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	if err := Migrate(ctx, from, to); !IsLocked(err) {
		t.Fatalf("migrating a locked instance: %v", err)
	}
	if keys, _ := to.Keys(ctx); len(keys) != 0 {
		t.Fatalf("partial migration: %v", keys)
	}
}

func TestPullPush(t *testing.T) {
	ctx := context.Background()
	src := openRemote(t, fmt.Sprintf("mem://pull-%d/p", memSeq.Add(1)), RemoteOptions{})
	for _, k := range []string{"", "bob"} {
		if err := src.Put(ctx, k, inFlight(k)); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := Pull(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	data, err := MarshalSnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseSnapshot(data, "pulled.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(parsed.Instances) != 2 || parsed.Instances["bob"].Records["train.lora"].Status != pipeline.StatusRunning {
		t.Fatalf("pull output: %s", data)
	}

	// Push into a local file, then push that file (the local layout) into another remote.
	local := openFile(t, filepath.Join(t.TempDir(), "x.state.json"))
	written, err := Push(ctx, local, parsed, PushOptions{})
	if err != nil || len(written) != 2 {
		t.Fatalf("push: %v %v", written, err)
	}
	localSnap, _ := Pull(ctx, local)
	raw, _ := MarshalSnapshot(localSnap)
	fileSnap, err := ParseSnapshot(raw, "x.state.json")
	if err != nil {
		t.Fatal(err)
	}
	dst := openRemote(t, fmt.Sprintf("mem://push-%d/p", memSeq.Add(1)), RemoteOptions{})
	if _, err := Push(ctx, dst, fileSnap, PushOptions{}); err != nil {
		t.Fatal(err)
	}
	in, _ := dst.Get(ctx, "bob")
	if in == nil || !strings.Contains(string(in.Records["train.lora"].Data), "tr-bob") {
		t.Fatalf("pushed: %+v", in)
	}
	// Pushing an older serial over a newer instance, or another lineage, needs -force.
	in.Records["train.lora"].Status = pipeline.StatusComplete
	dst.Put(ctx, "bob", in)
	dst.Put(ctx, "bob", in)
	_, err = Push(ctx, dst, fileSnap, PushOptions{})
	if err == nil || !strings.Contains(err.Error(), "newer than the pushed serial") {
		t.Fatalf("push of an older serial: %v", err)
	}
	foreign, _ := ParseSnapshot(raw, "x")
	for _, fi := range foreign.Instances {
		fi.Lineage, fi.Serial = "11111111-2222-4333-8444-555555555555", 99
	}
	if _, err := Push(ctx, dst, foreign, PushOptions{}); err == nil || !strings.Contains(err.Error(), "lineage") {
		t.Fatalf("push of another lineage: %v", err)
	}
	if _, err := Push(ctx, dst, fileSnap, PushOptions{Force: true}); err != nil {
		t.Fatalf("forced push: %v", err)
	}
	if got, _ := dst.Get(ctx, "bob"); got.Records["train.lora"].Status != pipeline.StatusRunning {
		t.Fatal("forced push did not replace the instance")
	}
	if _, err := ParseSnapshot([]byte(`{"a":1}`), "junk.json"); err == nil || !strings.Contains(err.Error(), "junk.json") {
		t.Fatalf("junk: %v", err)
	}
}

// TestTransferPerInstanceDirectory: state pull, push and migrate with the per-instance layout, in
// both directions, keep in-flight trainings and the lineage.
func TestTransferPerInstanceDirectory(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	file := openFile(t, filepath.Join(root, "retrain.state.json"))
	for _, k := range []string{"alice", "bob"} {
		if err := file.Put(ctx, k, inFlight(k)); err != nil {
			t.Fatal(err)
		}
	}
	lineage, _ := file.Lineage()
	check := func(st Store, what string) {
		t.Helper()
		for _, k := range []string{"alice", "bob"} {
			in, err := st.Get(ctx, k)
			if err != nil || in == nil {
				t.Fatalf("%s: %s: %+v %v", what, k, in, err)
			}
			tr := in.Records["train.lora"]
			if tr.Status != pipeline.StatusRunning || !strings.Contains(string(tr.Data), `"training_id":"tr-`+k+`"`) || in.Lineage != lineage {
				t.Fatalf("%s: %s is %+v / %+v", what, k, in, tr)
			}
		}
	}

	// Local file -> directory (state migrate -to DIR/), then directory -> every remote backend.
	dir := openDir(t, filepath.Join(root, "other.state"), "")
	if err := Migrate(ctx, file, dir); err != nil {
		t.Fatal(err)
	}
	check(dir, "file to directory")
	for _, b := range testBackends(t) {
		remote := openRemote(t, b.url, RemoteOptions{})
		if err := Migrate(ctx, dir, remote); err != nil {
			t.Fatalf("%s: %v", b.name, err)
		}
		check(remote, "directory to "+b.name)
	}
	// Pull from the directory, push into a fresh directory.
	snap, err := Pull(ctx, dir)
	if err != nil || snap.Lineage != lineage || len(snap.Instances) != 2 {
		t.Fatalf("pull: %+v %v", snap, err)
	}
	raw, _ := MarshalSnapshot(snap)
	parsed, err := ParseSnapshot(raw, "pulled.json")
	if err != nil {
		t.Fatal(err)
	}
	fresh := openDir(t, filepath.Join(root, "fresh.state"), "")
	if written, err := Push(ctx, fresh, parsed, PushOptions{}); err != nil || len(written) != 2 {
		t.Fatalf("push: %v %v", written, err)
	}
	check(openDir(t, filepath.Join(root, "fresh.state"), ""), "pushed into a directory")
}
