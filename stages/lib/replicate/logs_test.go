package replicate

import (
	"math"
	"testing"
)

func TestParseLogs(t *testing.T) {
	const bar = "flux_train_replicate:  45%|████▌     | 450/1000 [05:12<06:21,  1.44it/s, lr: 4.0e-04 loss: 3.512e-01]"
	cases := []struct {
		name        string
		logs        string
		step, total int
		losses      []LossPoint
	}{
		{name: "empty", logs: ""},
		{name: "one bar", logs: bar, step: 450, total: 1000, losses: []LossPoint{{450, 0.3512}}},
		{
			name: "redrawn with carriage returns, last wins per step",
			logs: "flux_train_replicate:   0%|          | 0/1000 [00:00<?, ?it/s]" +
				"\rflux_train_replicate:   1%|          | 10/1000 [00:07<11:30,  1.43it/s, lr: 4.0e-04 loss: 6.1e-01]" +
				"\rflux_train_replicate:   1%|          | 10/1000 [00:07<11:30,  1.43it/s, lr: 4.0e-04 loss: 6.0e-01]" +
				"\rflux_train_replicate:   2%|▏         | 20/1000 [00:14<11:20,  1.43it/s, lr: 4.0e-04 loss: 5.50e-01]",
			step: 20, total: 1000, losses: []LossPoint{{10, 0.60}, {20, 0.55}},
		},
		{
			name: "partial last redraw is ignored, even when the number looks whole",
			logs: bar + "\rflux_train_replicate:  46%|████▌     | 460/1000 [05:19<06:14,  1.44it/s, lr: 4.0e-04 loss: 3.4",
			step: 450, total: 1000, losses: []LossPoint{{450, 0.3512}},
		},
		{
			name: "partial exponent is ignored",
			logs: bar + "\rflux_train_replicate:  46%|████▌     | 460/1000 [05:19<06:14,  1.44it/s, lr: 4.0e-04 loss: 3.401e",
			step: 450, total: 1000, losses: []LossPoint{{450, 0.3512}},
		},
		{
			name: "unrelated lines and bars",
			logs: "Downloading weights\nLoading checkpoint shards: 100%|██████████| 2/2 [00:01<00:00,  1.63it/s]\n" +
				"Caching latents to disk: 100%|██████████| 14/14 [00:04<00:00,  3.10it/s]\n" +
				"some loss: 9.9e+00 text that is not a bar\n" + bar + "\nSaved to output/lora.safetensors\n",
			step: 450, total: 1000, losses: []LossPoint{{450, 0.3512}},
		},
		{
			name: "CRLF, ANSI colour and plain decimals",
			logs: "\x1b[32mflux: 10%|█         | 100/1000 [01:00<09:00,  1.5it/s, loss=0.72, lr=4e-4]\x1b[0m\r\n" +
				"flux: 20%|██        | 200/1000 [02:00<08:00,  1.5it/s, loss=.5]\r\n",
			step: 200, total: 1000, losses: []LossPoint{{100, 0.72}, {200, 0.5}},
		},
		{
			name: "scientific notation variants",
			logs: "x:  1%|| 1/100 [00:01<00:00, 1it/s, loss: 1E-1]\rx:  2%|| 2/100 [00:01<00:00, 1it/s, loss: 2.5e+00]\rx:  3%|| 3/100 [00:01<00:00, 1it/s, loss: 7.25E-02]",
			step: 3, total: 100, losses: []LossPoint{{1, 0.1}, {2, 2.5}, {3, 0.0725}},
		},
		{
			name: "nan loss is skipped but the step counts",
			logs: "x: 10%|█| 10/100 [00:01<00:09, 9it/s, lr: 4.0e-04 loss: nan]",
			step: 10, total: 100,
		},
		{
			name: "steps out of order (resumed bar) sorted",
			logs: "x: 20%|█| 20/100 [00:01<00:09, 9it/s, loss: 2e-1]\nx: 10%|█| 10/100 [00:01<00:09, 9it/s, loss: 3e-1]\n",
			step: 10, total: 100, losses: []LossPoint{{10, 0.3}, {20, 0.2}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ParseLogs(c.logs)
			if got.Step != c.step || got.Total != c.total {
				t.Errorf("step/total = %d/%d, want %d/%d", got.Step, got.Total, c.step, c.total)
			}
			if len(got.Losses) != len(c.losses) {
				t.Fatalf("losses = %v, want %v", got.Losses, c.losses)
			}
			for i := range c.losses {
				if got.Losses[i].Step != c.losses[i].Step || math.Abs(got.Losses[i].Loss-c.losses[i].Loss) > 1e-12 {
					t.Fatalf("losses = %v, want %v", got.Losses, c.losses)
				}
			}
		})
	}
}

func TestInputsMatchIgnoresRedactedSecrets(t *testing.T) {
	want, _ := canonical(map[string]any{"steps": 1000, "hf_token": "hf_abc", "trigger_word": "TOK"})
	if !inputsMatch(map[string]any{"steps": 1000.0, "hf_token": SecretMarker, "trigger_word": "TOK"}, want) {
		t.Error("a redacted secret must match")
	}
	// Secret-named keys never decide: the API never shows them back as sent.
	if !inputsMatch(map[string]any{"steps": 1000.0, "trigger_word": "TOK"}, want) {
		t.Error("a secret-named key missing on the remote side must not prevent the match")
	}
	if inputsMatch(map[string]any{"steps": 1000.0, "hf_token": SecretMarker, "trigger_word": "XYZ"}, want) {
		t.Error("a visible different value must not match")
	}
	if inputsMatch(map[string]any{"steps": 1000.0, "hf_token": SecretMarker}, want) {
		t.Error("a missing key must not match")
	}
	if !inputsMatch(map[string]any{"steps": 1000.0, "trigger_word": "TOK", "lora_rank": 16.0}, want) {
		t.Error("a key the API added (a default) must not prevent the match")
	}
}

func TestResolveRebasesNextLinks(t *testing.T) {
	c, err := New("http://127.0.0.1:9/", "tok")
	if err != nil {
		t.Fatal(err)
	}
	for link, want := range map[string]string{
		"https://api.replicate.com/v1/trainings?cursor=abc":  "http://127.0.0.1:9/v1/trainings?cursor=abc",
		"/v1/trainings?cursor=abc":                           "http://127.0.0.1:9/v1/trainings?cursor=abc",
		"http://127.0.0.1:9/v1/models/a/b/versions?cursor=x": "http://127.0.0.1:9/v1/models/a/b/versions?cursor=x",
	} {
		got, err := c.resolve(link)
		if err != nil || got != want {
			t.Errorf("resolve(%q) = %q, %v; want %q", link, got, err, want)
		}
	}
}

// Trainers write the loss in other cases and spacings; each is read, and the value still needs a
// separator after it.
func TestParseLogsReadsLossInAnyCaseAndSpacing(t *testing.T) {
	logs := "10%|█         | 100/1000 [00:10<01:30,  9.9it/s, LR: 4.0e-04 Loss: 3.5e-01]\r" +
		"20%|██        | 200/1000 [00:20<01:20,  9.9it/s, lr = 4.0e-04, loss = 0.31]\r" +
		"30%|███       | 300/1000 [00:30<01:10,  9.9it/s, LOSS=0.29]\n"
	p := ParseLogs(logs)
	want := []LossPoint{{100, 0.35}, {200, 0.31}, {300, 0.29}}
	if len(p.Losses) != len(want) || p.Step != 300 || p.Total != 1000 {
		t.Fatalf("parsed %+v, want %v at step 300/1000", p, want)
	}
	for i, w := range want {
		if p.Losses[i] != w {
			t.Errorf("loss %d = %+v, want %+v", i, p.Losses[i], w)
		}
	}
}
