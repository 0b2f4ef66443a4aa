package state

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkPut records one transition of one subject (a realistic 50-photo instance, per-photo
// stats excluded) in a state that holds N subjects, as apply does after every stage. For the
// per-instance directory the cost must not grow with N; the single file rewrites every subject.
//
//	go test -run '^$' -bench Put -benchtime 200x ./pipeline/state/
func BenchmarkPut(b *testing.B) {
	in := subject50(b, func(n int) string { return fmt.Sprintf("data/ana/ana-%02d.jpg", n) }, false)
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("dir/instances=%d", n), func(b *testing.B) { benchDirPut(b, in, n) })
	}
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("file/instances=%d", n), func(b *testing.B) { benchFilePut(b, in, n) })
	}
}

func benchDirPut(b *testing.B, in *Instance, n int) {
	ctx := context.Background()
	dir := filepath.Join(b.TempDir(), "s.state")
	st, err := OpenDir(dir, "")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	lk, err := st.Lock(ctx, "", NewLockInfo("apply"), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer lk.Unlock()
	one := in.Clone()
	if err := st.Put(ctx, subjectKey(0), one); err != nil {
		b.Fatal(err)
	}
	seedDir(b, dir, in, one.Lineage, n)
	w0, by0 := st.writes.Load(), st.bytesWritten.Load()
	b.ResetTimer()
	for i := range b.N {
		one.Records["train.lora"].UpdatedAt = time.Unix(int64(i), 0).UTC()
		if err := st.Put(ctx, subjectKey(0), one); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	fi, _ := os.Stat(st.instancePath(subjectKey(0)))
	b.ReportMetric(float64(fi.Size()), "B/subject")
	b.ReportMetric(float64(st.bytesWritten.Load()-by0)/float64(b.N), "B-written/op")
	b.ReportMetric(float64(st.writes.Load()-w0)/float64(b.N), "files/op")
}

// seedDir writes instances 1..n-1 straight to disk (no fsync: setting up, not measuring).
func seedDir(b *testing.B, dir string, in *Instance, lineage string, n int) {
	for i := 1; i < n; i++ {
		c := *in
		c.Key, c.Lineage, c.Serial = subjectKey(i), lineage, 1
		data, err := encodeInstanceFile(&c)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, keyName(c.Key)+instanceExt), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
}

func benchFilePut(b *testing.B, in *Instance, n int) {
	ctx := context.Background()
	st, err := OpenFile(filepath.Join(b.TempDir(), "s.state.json"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	lk, err := st.Lock(ctx, "", NewLockInfo("apply"), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer lk.Unlock()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = subjectKey(i)
	}
	runBounded(keys, 64, func(k string) {
		if err := st.Put(ctx, k, in.Clone()); err != nil {
			b.Error(err)
		}
	})
	one := in.Clone()
	b.ResetTimer()
	for i := range b.N {
		one.Records["train.lora"].UpdatedAt = time.Unix(int64(i), 0).UTC()
		if err := st.Put(ctx, subjectKey(0), one); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	fi, _ := os.Stat(st.Path())
	b.ReportMetric(float64(fi.Size())/float64(n), "B/subject")
	b.ReportMetric(float64(fi.Size()), "B-written/op")
	b.ReportMetric(1, "files/op")
}

func subjectKey(i int) string { return fmt.Sprintf("subject-%05d", i) }
