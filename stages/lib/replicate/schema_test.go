package replicate_test

import (
	"context"
	"reflect"
	"sync"
	"testing"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// A trainer version's schema is read once per process however many subjects ask at once, and a
// second process with the same cache (another CI runner) reads none; plan with -refresh=false
// gets it from the cache with no request at all.
func TestTrainerSchemaReadOnceAndCached(t *testing.T) {
	srv := newServer(t)
	cache := pipeline.DirCache(t.TempDir())
	first, err := replicate.New(srv.URL(), srv.Token(), replicate.WithCache(cache))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	specs := make([]map[string]replicate.InputSpec, 50)
	for i := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := first.TrainerInputs(context.Background(), replicatetest.Trainer)
			if err != nil {
				t.Error(err)
			}
			specs[i] = s
		}()
	}
	wg.Wait()
	if n := srv.Count("GET version"); n != 1 {
		t.Fatalf("50 concurrent callers made %d schema requests, want 1", n)
	}
	for _, s := range specs[1:] {
		if !reflect.DeepEqual(s, specs[0]) || s["steps"].Maximum == nil {
			t.Fatal("callers got different schemas")
		}
	}
	if _, ok, _ := cache.Get(context.Background(), replicate.SchemaCacheKey(first.BaseURL()[len("http://"):], replicatetest.TrainerVersion)); !ok {
		t.Fatal("the schema is not in the cache")
	}

	second, _ := replicate.New(srv.URL(), srv.Token(), replicate.WithCache(cache))
	again, err := second.TrainerInputs(context.Background(), replicatetest.Trainer)
	if err != nil || !reflect.DeepEqual(again, specs[0]) {
		t.Fatalf("second process: %v", err)
	}
	refresh, _ := replicate.New(srv.URL(), srv.Token(), replicate.WithCache(cache))
	cached, found, err := refresh.CachedTrainerInputs(context.Background(), replicatetest.Trainer)
	if err != nil || !found || !reflect.DeepEqual(cached, specs[0]) {
		t.Fatalf("from the cache only: found %v, %v", found, err)
	}
	if n := srv.Count("GET version") + srv.Count("401"); n != 1 {
		t.Errorf("%d schema requests in all, want the first process's one", n)
	}
	if s := second.Stats(); s.Other != 0 {
		t.Errorf("the second process sent %d requests", s.Other)
	}

	bare, _ := replicate.New(srv.URL(), srv.Token())
	if _, found, err := bare.CachedTrainerInputs(context.Background(), replicatetest.Trainer); found || err != nil {
		t.Errorf("without a cache: found %v, %v; want not found", found, err)
	}
	if n := srv.Count("GET version"); n != 1 {
		t.Errorf("CachedTrainerInputs made a request")
	}
}

// A version without a schema is as immutable as one with: the "unknown" answer is cached too,
// while a failed read is not (the next caller tries again).
func TestTrainerSchemaUnknownIsCachedFailureIsNot(t *testing.T) {
	srv := newServer(t)
	cache := pipeline.DirCache(t.TempDir())
	srv.Fail("GET", "/v1/models/ostris", 404, 1)
	c, _ := replicate.New(srv.URL(), srv.Token(), replicate.WithCache(cache))
	if _, err := c.TrainerInputs(context.Background(), replicatetest.Trainer); !replicate.IsNotFound(err) {
		t.Fatalf("first read: %v, want the 404", err)
	}
	srv.SetVersionSchema(replicatetest.TrainerVersion, []byte("null"))
	if _, err := c.TrainerInputs(context.Background(), replicatetest.Trainer); !replicate.IsSchemaUnknown(err) {
		t.Fatalf("after the failure: %v, want it read again (schema unknown)", err)
	}
	other, _ := replicate.New(srv.URL(), srv.Token(), replicate.WithCache(cache))
	if _, found, err := other.CachedTrainerInputs(context.Background(), replicatetest.Trainer); !found || !replicate.IsSchemaUnknown(err) {
		t.Errorf("cached null schema: found %v, %v", found, err)
	}
}

// FromEnv gives the client the env's cache.
func TestFromEnvUsesTheEnvCache(t *testing.T) {
	srv := newServer(t)
	cache := pipeline.DirCache(t.TempDir())
	env := &pipeline.Env{Cache: cache, Getenv: func(k string) string {
		return map[string]string{"REPLICATE_API_TOKEN": srv.Token(), "REPLICATE_BASE_URL": srv.URL()}[k]
	}}
	c, err := replicate.FromEnv(env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.TrainerInputs(context.Background(), replicatetest.Trainer); err != nil {
		t.Fatal(err)
	}
	other, _ := replicate.New(srv.URL(), srv.Token(), replicate.WithCache(cache))
	if _, found, _ := other.CachedTrainerInputs(context.Background(), replicatetest.Trainer); !found {
		t.Error("FromEnv's client did not write the env's cache")
	}
}
