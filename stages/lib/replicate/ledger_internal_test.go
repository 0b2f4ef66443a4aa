package replicate

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// A subject retrained every week for two years keeps a ledger of bounded size: its live versions,
// its last accepted one and its last few deletions, the deletions without what they were trained
// on. State stays under 16 KB a subject however long it lives.
func TestTheLedgerOfARetrainedSubjectStaysSmall(t *testing.T) {
	l := &Ledger{}
	ref := func(i int) string { return fmt.Sprintf("acme/ana-lora:%064x", i) }
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var sizes []int
	for i := 0; i < 104; i++ {
		l.Produced(ref(i), fmt.Sprintf("t%025d", i), 50, "sha256:"+strings.Repeat("ab", 32), at.AddDate(0, 0, 7*i))
		l.Judge(ref(i), Accepted)
		if i >= 3 {
			l.MarkDeleted(ref(i - 3)) // prune's keep_last = 3
		}
		l.trim()
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(b))
	}
	if last := sizes[len(sizes)-1]; last > 2500 || last != sizes[len(sizes)-2] {
		t.Errorf("ledger after 104 retrains: %d bytes (the one before: %d), want it to stop growing under 2.5 KB", last, sizes[len(sizes)-2])
	}
	if got := l.LastAccepted(); got == nil || got.Ref != ref(103) {
		t.Errorf("last accepted %+v, want the newest", got)
	}
	for i := 101; i <= 103; i++ {
		if v := l.find(ref(i)); v == nil || v.Deleted || v.ImagesDigest == "" {
			t.Errorf("live version %d: %+v, want it kept whole", i, v)
		}
	}
	t.Logf("ledger sizes: first %d, after 10 %d, after 104 %d bytes", sizes[0], sizes[9], sizes[len(sizes)-1])
}
