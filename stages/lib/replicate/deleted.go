package replicate

import (
	"encoding/json"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// Deleting a version is asynchronous on Replicate (202, "it might take a few minutes"): for a
// while the version is still listed and may still be a model's latest_version. Stages that delete
// versions (loss_gate, generate's plastic-skin gate, prune) record what they deleted in their
// private data under DeletedVersionsKey, and stages that pick a version by listing (generate's
// previous version, train's previous_version, prune's retention) skip those.

// DeletedVersionsKey is the key of the list of deleted versions ("owner/name:id" or bare ids) in a
// stage's private data.
const DeletedVersionsKey = "deleted_versions"

// MaxDeletedVersions bounds how many deleted versions a stage keeps recording: long enough for
// the API to finish the deletes, short enough that state does not grow.
const MaxDeletedVersions = 32

// DeletedVersions returns the version ids that stages of this batch instance recorded as deleted
// (in any record's private data under DeletedVersionsKey, or generate's single "deleted"), plus
// extra refs. Keys are bare version ids.
func DeletedVersions(view pipeline.StateView, extra ...string) map[string]bool {
	out := map[string]bool{}
	add := func(ref string) {
		if id := versionID(ref); id != "" {
			out[id] = true
		} else if _, _, v, err := SplitVersion(ref); err == nil && v != "" {
			out[v] = true
		}
	}
	for _, r := range extra {
		add(r)
	}
	if view == nil {
		return out
	}
	for _, rec := range view.Records("") {
		if len(rec.Data) == 0 {
			continue
		}
		var d struct {
			Deleted         json.RawMessage `json:"deleted"`
			DeletedVersion  []string        `json:"deleted_versions"`
			RejectedVersion []string        `json:"rejected_versions"`
		}
		if json.Unmarshal(rec.Data, &d) != nil {
			continue
		}
		for _, r := range d.DeletedVersion {
			add(r)
		}
		// A rejected version whose delete has not finished (interrupted, refused, failing) is no
		// good version either: nobody may pick it as "previous" or count it as kept.
		for _, r := range d.RejectedVersion {
			add(r)
		}
		var one string
		if len(d.Deleted) > 0 && json.Unmarshal(d.Deleted, &one) == nil && one != "" {
			add(one)
		}
	}
	return out
}

// RejectedVersions returns the versions a gate of this batch instance rejected (recorded under
// RejectedVersionsKey before it tries to delete them), as "owner/name:id" refs. A version in this
// set that is still listed is one whose delete did not finish; prune deletes it.
func RejectedVersions(view pipeline.StateView) []string {
	if view == nil {
		return nil
	}
	var out []string
	for _, rec := range view.Records("") {
		var d struct {
			Rejected []string `json:"rejected_versions"`
		}
		if len(rec.Data) > 0 && json.Unmarshal(rec.Data, &d) == nil {
			out = append(out, d.Rejected...)
		}
	}
	return out
}

// RejectedVersionsKey is the key of the versions a gate rejected in its private data.
const RejectedVersionsKey = "rejected_versions"

// RememberDeleted appends ref to list (once), keeping the newest MaxDeletedVersions entries.
func RememberDeleted(list []string, ref string) []string {
	for _, r := range list {
		if r == ref {
			return list
		}
	}
	list = append(list, ref)
	if len(list) > MaxDeletedVersions {
		list = append([]string(nil), list[len(list)-MaxDeletedVersions:]...)
	}
	return list
}
