package ci_test

// Checks of the Kubernetes example, examples/kubernetes/retrain-job.yaml and the Dockerfile of its
// image, without a cluster: the manifests decode strictly into the k8s.io/api types (a misspelt
// or misplaced field is an error, as `kubectl apply --validate=strict` makes it), they keep the
// promises their comments make (Indexed, completions = parallelism = the N of -shard, retries per
// shard and by exit code, the token from a Secret, S3 state), and the container's command, run as
// the kubelet runs it in a directory laid out as the Dockerfile lays out the image, trains every
// subject once across the indexes, writes only to the mounted volumes, survives a pod deletion
// (SIGTERM) within the grace period and lets the replacement pod re-attach instead of paying twice.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/pipeline-dev/pipeline/pipeline/state"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

const (
	jobPath        = "../kubernetes/retrain-job.yaml"
	dockerfilePath = "../kubernetes/Dockerfile"
)

// manifests are the objects of retrain-job.yaml.
type manifests struct {
	src []byte
	sa  *corev1.ServiceAccount
	job *batchv1.Job
}

// decodeManifests decodes every document of src strictly into its k8s.io/api type: unknown and
// duplicate fields are errors, and so is a kind the example should not contain.
func decodeManifests(src []byte) (manifests, error) {
	m := manifests{src: src}
	for i, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(src), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return m, fmt.Errorf("document %d: %v", i+1, err)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 ServiceAccount":
			if m.sa != nil {
				return m, fmt.Errorf("document %d: a second ServiceAccount", i+1)
			}
			m.sa = &corev1.ServiceAccount{}
			obj = m.sa
		case "batch/v1 Job":
			if m.job != nil {
				return m, fmt.Errorf("document %d: a second Job", i+1)
			}
			m.job = &batchv1.Job{}
			obj = m.job
		default:
			return m, fmt.Errorf("document %d: unexpected %q %q (want a v1 ServiceAccount and a batch/v1 Job)", i+1, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			return m, fmt.Errorf("document %d (%s): %v", i+1, tm.Kind, err)
		}
	}
	if m.sa == nil || m.job == nil {
		return m, errors.New("want a ServiceAccount and a Job")
	}
	return m, nil
}

func readManifests(t *testing.T) manifests {
	t.Helper()
	src, err := os.ReadFile(jobPath)
	if err != nil {
		t.Fatalf("reading the Job: %v", err)
	}
	m, err := decodeManifests(src)
	if err != nil {
		t.Fatalf("%s: %v", jobPath, err)
	}
	return m
}

// container is the Job's one container.
func container(t *testing.T, job *batchv1.Job) *corev1.Container {
	t.Helper()
	cs := job.Spec.Template.Spec.Containers
	if len(cs) != 1 || len(job.Spec.Template.Spec.InitContainers) != 0 {
		t.Fatalf("want exactly one container and no init containers; have %d and %d", len(cs), len(job.Spec.Template.Spec.InitContainers))
	}
	return &cs[0]
}

// script is the container's `sh -c` script.
func script(t *testing.T, c *corev1.Container) string {
	t.Helper()
	if len(c.Command) != 3 || c.Command[0] != "sh" || c.Command[1] != "-c" || len(c.Args) != 0 {
		t.Fatalf("the command must be [sh, -c, SCRIPT] with no args; have command %q args %q", c.Command, c.Args)
	}
	return c.Command[2]
}

var (
	// The command the script ends with; group 1 is the N of -shard I/N, 2 -max-in-flight, 3 -state.
	applyRE = regexp.MustCompile(`(?:^|;\s*)exec pipeline apply -auto-approve -shard "\$\(\(JOB_COMPLETION_INDEX \+ 1\)\)/(\d+)" -max-in-flight (\d+) -state '([^']*)' examples/retrain\.hcl$`)
	stateRE = regexp.MustCompile(`-state '([^']*)'`)
	// Names of variables that hold a credential.
	credentialRE = regexp.MustCompile(`(?i)token|secret|key|password`)
)

func TestKubernetesManifestsDecodeStrictly(t *testing.T) {
	m := readManifests(t)

	// The decoding is really strict: a misspelt field, a field at the wrong level and a duplicate
	// key must each fail, or the decode above proves nothing.
	for name, edit := range map[string][2]string{
		"misspelt field":  {"  completionMode: Indexed\n", "  completionsMode: Indexed\n"},
		"misplaced field": {"      restartPolicy: Never\n", "      restartPolicy: Never\n      backoffLimit: 1\n"},
		"duplicate key":   {"  parallelism: 4\n", "  parallelism: 4\n  parallelism: 2\n"},
		"bad quantity":    {"memory: 2Gi\n", "memory: 2GB\n"},
	} {
		broken := bytes.Replace(m.src, []byte(edit[0]), []byte(edit[1]), 1)
		if bytes.Equal(broken, m.src) {
			t.Fatalf("%s: the manifest no longer contains %q", name, edit[0])
		}
		if _, err := decodeManifests(broken); err == nil {
			t.Errorf("%s (%q → %q) decodes without error: the strict decoding proves nothing", name, edit[0], edit[1])
		}
	}
}

// podFailureAction is what the Job controller does with a failed pod of job whose container exited
// with code and which has the given pod conditions (all True): the action of the first matching rule,
// else Count (the default handling).
func podFailureAction(job *batchv1.Job, code int32, conditions ...corev1.PodConditionType) batchv1.PodFailurePolicyAction {
	if job.Spec.PodFailurePolicy == nil {
		return batchv1.PodFailurePolicyActionCount
	}
	for _, r := range job.Spec.PodFailurePolicy.Rules {
		switch {
		case r.OnExitCodes != nil:
			if code == 0 {
				continue // Kubernetes excludes containers that succeeded
			}
			in := slices.Contains(r.OnExitCodes.Values, code)
			if (r.OnExitCodes.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn) == in {
				return r.Action
			}
		default:
			for _, p := range r.OnPodConditions {
				if slices.Contains(conditions, p.Type) && (p.Status == "" || p.Status == corev1.ConditionTrue) {
					return r.Action
				}
			}
		}
	}
	return batchv1.PodFailurePolicyActionCount
}

// validatePodFailurePolicy checks what the API server's validation would refuse.
func validatePodFailurePolicy(t *testing.T, job *batchv1.Job, c *corev1.Container) {
	t.Helper()
	p := job.Spec.PodFailurePolicy
	if job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Error("podFailurePolicy and backoffLimitPerIndex need restartPolicy: Never")
	}
	if job.Spec.PodReplacementPolicy == nil || *job.Spec.PodReplacementPolicy != batchv1.Failed {
		t.Error("podReplacementPolicy must be Failed (the only value allowed with a podFailurePolicy)")
	}
	for i, r := range p.Rules {
		if (r.OnExitCodes == nil) == (len(r.OnPodConditions) == 0) {
			t.Errorf("rule %d: exactly one of onExitCodes and onPodConditions", i)
		}
		switch r.Action {
		case batchv1.PodFailurePolicyActionFailJob, batchv1.PodFailurePolicyActionIgnore, batchv1.PodFailurePolicyActionCount:
		case batchv1.PodFailurePolicyActionFailIndex:
			if job.Spec.BackoffLimitPerIndex == nil {
				t.Errorf("rule %d: FailIndex needs backoffLimitPerIndex", i)
			}
		default:
			t.Errorf("rule %d: unknown action %q", i, r.Action)
		}
		if e := r.OnExitCodes; e != nil {
			if e.ContainerName != nil && *e.ContainerName != c.Name {
				t.Errorf("rule %d: containerName %q is not the container %q", i, *e.ContainerName, c.Name)
			}
			if e.Operator != batchv1.PodFailurePolicyOnExitCodesOpIn && e.Operator != batchv1.PodFailurePolicyOnExitCodesOpNotIn {
				t.Errorf("rule %d: operator %q", i, e.Operator)
			}
			if len(e.Values) == 0 || !slices.IsSorted(e.Values) || len(slices.Compact(slices.Clone(e.Values))) != len(e.Values) {
				t.Errorf("rule %d: values %v must be sorted, unique and not empty", i, e.Values)
			}
			if e.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn && slices.Contains(e.Values, 0) {
				t.Errorf("rule %d: 0 cannot be used with In", i)
			}
		}
	}
}

func TestKubernetesJobPromises(t *testing.T) {
	m := readManifests(t)
	job, spec := m.job, m.job.Spec
	pod := spec.Template.Spec
	c := container(t, job)
	sc := script(t, c)

	// Indexed, one pod per shard, all at once; the N of -shard is the Job's.
	if spec.CompletionMode == nil || *spec.CompletionMode != batchv1.IndexedCompletion {
		t.Fatal("completionMode must be Indexed: JOB_COMPLETION_INDEX exists only then")
	}
	cmd := applyRE.FindStringSubmatch(sc)
	if cmd == nil {
		t.Fatalf("the script must end with `exec pipeline apply -auto-approve -shard \"$((JOB_COMPLETION_INDEX + 1))/N\" -max-in-flight M -state 's3://...' examples/retrain.hcl` (exec: SIGTERM reaches pipeline); script:\n%s", sc)
	}
	n, _ := strconv.Atoi(cmd[1])
	if spec.Completions == nil || spec.Parallelism == nil || int(*spec.Completions) != n || int(*spec.Parallelism) != n || n < 2 {
		t.Fatalf("completions %v and parallelism %v must both be the %d of -shard .../%d (at least 2)", spec.Completions, spec.Parallelism, n, n)
	}
	if mif, _ := strconv.Atoi(cmd[2]); mif < 1 {
		t.Errorf("-max-in-flight %s", cmd[2])
	}
	if !strings.HasPrefix(cmd[3], "s3://") || len(stateRE.FindAllString(sc, -1)) != 1 {
		t.Errorf("the state must be one s3:// URL; have %q", stateRE.FindAllString(sc, -1))
	}
	if !strings.Contains(sc, `"${JOB_COMPLETION_INDEX:?`) {
		t.Error("the script must refuse to run without JOB_COMPLETION_INDEX (every pod would run shard 1)")
	}
	// Pods' hostnames are JOB-INDEX, so the name must leave room for the index.
	if errs := validation.IsDNS1123Label(job.Name + "-" + strconv.Itoa(n-1)); len(errs) > 0 {
		t.Errorf("job name %q: %v", job.Name, errs)
	}

	// Retries: per shard, by exit code, and the Job-wide limit never ends the Job before that.
	if pod.RestartPolicy != corev1.RestartPolicyNever {
		t.Error("restartPolicy must be Never: every try its own pod and log, and podFailurePolicy needs it")
	}
	if spec.BackoffLimitPerIndex == nil || *spec.BackoffLimitPerIndex < 1 {
		t.Fatal("backoffLimitPerIndex must allow at least one retry per shard (a retry re-attaches)")
	}
	if spec.MaxFailedIndexes != nil {
		t.Error("maxFailedIndexes would terminate healthy shards once others failed")
	}
	tries := int32(n) * (*spec.BackoffLimitPerIndex + 1)
	if spec.BackoffLimit == nil || *spec.BackoffLimit < tries {
		t.Errorf("backoffLimit %v < %d shards × %d tries: it could fail the Job (and stop healthy shards) first", spec.BackoffLimit, n, *spec.BackoffLimitPerIndex+1)
	}
	if spec.PodFailurePolicy == nil {
		t.Fatal("no podFailurePolicy")
	}
	validatePodFailurePolicy(t, job, c)
	for code, want := range map[int32]batchv1.PodFailurePolicyAction{
		1:   batchv1.PodFailurePolicyActionCount,     // an error, or interrupted by SIGTERM: retry, it re-attaches
		3:   batchv1.PodFailurePolicyActionFailIndex, // a check refused: it would refuse again
		4:   batchv1.PodFailurePolicyActionFailIndex, // locked elsewhere: the next run picks it up
		137: batchv1.PodFailurePolicyActionCount,     // OOM-killed or past the grace period
	} {
		if got := podFailureAction(job, code); got != want {
			t.Errorf("a pod that exits %d: %s, want %s", code, got, want)
		}
	}
	if got := podFailureAction(job, 1, corev1.DisruptionTarget); got != batchv1.PodFailurePolicyActionIgnore {
		t.Errorf("an evicted or preempted pod: %s, want Ignore (not the shard's fault)", got)
	}
	if spec.ActiveDeadlineSeconds == nil || *spec.ActiveDeadlineSeconds < 3600 {
		t.Error("activeDeadlineSeconds must be set, and at least an hour: trainings take 15-40 minutes")
	}
	if spec.TTLSecondsAfterFinished == nil || *spec.TTLSecondsAfterFinished <= 0 {
		t.Error("ttlSecondsAfterFinished must be set (and not 0: the logs of a failed shard matter)")
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g < 30 {
		t.Error("terminationGracePeriodSeconds must give pipeline time to record state (at least Kubernetes' default 30)")
	}

	// Secrets: the token from a Secret, documented with the command that creates it; no literal
	// that looks like a credential anywhere.
	envs := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		envs[e.Name] = e
		if credentialRE.MatchString(e.Name) && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("env %s must come from a secretKeyRef, never a literal", e.Name)
		}
	}
	tok := envs["REPLICATE_API_TOKEN"]
	if tok.ValueFrom == nil || tok.ValueFrom.SecretKeyRef == nil {
		t.Fatal("REPLICATE_API_TOKEN must come from a secretKeyRef")
	}
	ref := tok.ValueFrom.SecretKeyRef
	if ref.Optional != nil && *ref.Optional {
		t.Error("the token's secretKeyRef must not be optional: a pod without it should not start")
	}
	if create := fmt.Sprintf("kubectl create secret generic %s --from-file=%s=/dev/stdin", ref.Name, ref.Key); !bytes.Contains(m.src, []byte(create)) {
		t.Errorf("the comments must say how to create the Secret: %q", create)
	}
	if bytes.Contains(m.src, []byte("r8_")) {
		t.Error("the manifest contains something like a Replicate token")
	}
	if envs["CI"].Value != "true" {
		t.Error("CI=true: automation mode, no prompts or progress redraws")
	}

	// AWS credentials by IRSA: the Job runs as the ServiceAccount that carries the role.
	if pod.ServiceAccountName != m.sa.Name {
		t.Errorf("serviceAccountName %q, want the manifest's ServiceAccount %q", pod.ServiceAccountName, m.sa.Name)
	}
	if arn := m.sa.Annotations["eks.amazonaws.com/role-arn"]; !strings.HasPrefix(arn, "arn:aws:iam::") {
		t.Errorf("the ServiceAccount needs an eks.amazonaws.com/role-arn annotation (IRSA), has %q", arn)
	}

	// Resources: memory bounded, and the Go runtime told so below the limit.
	req, lim := c.Resources.Requests, c.Resources.Limits
	mem, ok := lim[corev1.ResourceMemory]
	if !ok || req.Memory().IsZero() || req.Cpu().IsZero() || mem.Cmp(*req.Memory()) < 0 {
		t.Fatalf("want cpu and memory requests and a memory limit at least the request; have %v / %v", req, lim)
	}
	gomem := envs["GOMEMLIMIT"].Value
	q, err := resource.ParseQuantity(strings.TrimSuffix(gomem, "B"))
	if err != nil || q.Cmp(mem) >= 0 || q.Value() < mem.Value()*3/4 {
		t.Errorf("GOMEMLIMIT %q must be a little under the memory limit %s (%v)", gomem, mem.String(), err)
	}

	// A read-only root: every volume mounted is an emptyDir with a size limit (the run below checks
	// that pipeline writes nowhere else).
	if s := c.SecurityContext; s == nil || s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem ||
		s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation {
		t.Error("the container must have readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
	}
	if s := pod.SecurityContext; s == nil || s.RunAsNonRoot == nil || !*s.RunAsNonRoot || s.RunAsUser == nil {
		t.Error("the pod must run as a fixed non-root uid")
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok || v.EmptyDir == nil || v.EmptyDir.SizeLimit == nil {
			t.Errorf("volume %q: want an emptyDir with a sizeLimit", vm.Name)
		}
	}
	if len(c.VolumeMounts) == 0 {
		t.Error("no volumes: with a read-only root pipeline could not write its caches")
	}
	if c.Image == "" || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
		t.Errorf("image %q: pin a tag (or a digest), never :latest", c.Image)
	}
}

// ---- the image ----

// imageLayout is what examples/kubernetes/Dockerfile puts in the image.
type imageLayout struct {
	goVersion string     // the golang image's tag
	buildOut  string     // where the build stage writes the binary
	buildCmd  string     // the build stage's `go build` command line, as RUN runs it
	copies    [][]string // the last stage's COPY lines: [from, src, dst]
	workdir   string
	user      string
	comments  string
}

// readDockerfile parses the few instructions the example uses and refuses the rest in the last
// stage, so the layout the test builds cannot silently differ from the image.
func readDockerfile(t *testing.T) imageLayout {
	t.Helper()
	src, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	var img imageLayout
	stage := 0
	var unknown []string // lines of the current stage the test does not model
	text := strings.ReplaceAll(string(src), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") {
			img.comments += line + "\n"
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			stage++
			if stage == 1 {
				if m := regexp.MustCompile(`^golang:(\d+\.\d+)`).FindStringSubmatch(f[1]); m != nil {
					img.goVersion = m[1]
				}
			}
			img.copies, img.workdir, img.user, unknown = nil, "", "", nil
		case "RUN":
			// Run-stage RUN lines (adding the user) change no file the Job uses.
			if m := regexp.MustCompile(`^RUN (.*go build .*-o (\S+) \./cmd/pipeline)$`).FindStringSubmatch(line); m != nil {
				img.buildCmd, img.buildOut = m[1], m[2]
			}
		case "COPY":
			from, args := "", f[1:]
			if len(args) > 0 && strings.HasPrefix(args[0], "--from=") {
				from, args = strings.TrimPrefix(args[0], "--from="), args[1:]
			}
			if len(args) != 2 || strings.HasPrefix(args[0], "--") {
				unknown = append(unknown, line+" (only `COPY [--from=STAGE] SRC DST`)")
				continue
			}
			img.copies = append(img.copies, []string{from, args[0], args[1]})
		case "WORKDIR":
			img.workdir = f[1]
		case "USER":
			img.user = f[1]
		default:
			// ENV, ENTRYPOINT, VOLUME...: the test gives the process the image's standard PATH
			// and the Job's command, and would miss what these change.
			unknown = append(unknown, line)
		}
	}
	for _, line := range unknown {
		t.Errorf("Dockerfile: the test does not model this line of the run stage: %s", line)
	}
	if stage < 2 || img.buildOut == "" {
		t.Fatal("Dockerfile: want a build stage that runs `go build ... -o OUT ./cmd/pipeline` and a run stage")
	}
	return img
}

func TestKubernetesImageMatchesJob(t *testing.T) {
	img := readDockerfile(t)
	m := readManifests(t)
	c := container(t, m.job)

	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if want := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod); want == nil || img.goVersion != string(want[1]) {
		t.Errorf("the build stage's golang:%s is not go.mod's Go %s", img.goVersion, want[1])
	}
	bin := ""
	for _, cp := range img.copies {
		if cp[0] == "build" && cp[1] == img.buildOut {
			bin = cp[2]
		}
	}
	if filepath.Dir(bin) != "/usr/local/bin" {
		t.Errorf("the image must put the binary on its PATH as /usr/local/bin/pipeline, has %q", bin)
	}
	if c.WorkingDir == "" || c.WorkingDir != img.workdir {
		t.Errorf("the container's workingDir %q is not the image's WORKDIR %q", c.WorkingDir, img.workdir)
	}
	uid := m.job.Spec.Template.Spec.SecurityContext.RunAsUser
	if uid == nil || strings.Split(img.user, ":")[0] != strconv.FormatInt(*uid, 10) {
		t.Errorf("the image's USER %q is not the pod's runAsUser %v (runAsNonRoot needs a numeric USER)", img.user, uid)
	}
	if !strings.Contains(img.comments, "docker build -f examples/kubernetes/Dockerfile -t "+c.Image+" .") {
		t.Errorf("the Dockerfile's comments must say how to build %s, the Job's image", c.Image)
	}
}

// ---- the command, run as the kubelet runs it ----

// expandK8s is the kubelet's $(VAR) expansion of a container's command: $(NAME) of a defined
// variable is its value, $$ is $, anything else stays as written.
func expandK8s(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func TestExpandK8s(t *testing.T) {
	vars := map[string]string{"A": "x"}
	for in, want := range map[string]string{
		"$(A)":                              "x",
		"$$(A)":                             "$(A)",
		"$(B)":                              "$(B)",
		`"$((JOB_COMPLETION_INDEX + 1))/4"`: `"$((JOB_COMPLETION_INDEX + 1))/4"`,
		`"${A:?no}"`:                        `"${A:?no}"`,
		"a$":                                "a$",
		"$(A":                               "$(A",
	} {
		if got := expandK8s(in, vars); got != want {
			t.Errorf("expandK8s(%q) = %q, want %q", in, got, want)
		}
	}
}

// pod is one run of the container's command.
type pod struct {
	index int
	cmd   *exec.Cmd
	out   syncBuffer
	done  chan struct{}
	err   error
}

// api is the Replicate test server behind a loopback proxy that reports the first training a pod
// follows: the train stage GETs a training by id only once the id is in the state (SPEC: remote
// ids are recorded before waiting), so that request is the moment a deletion must not lose it.
type api struct {
	srv   *replicatetest.Server
	proxy *httptest.Server
	mu    sync.Mutex
	armed chan string
}

var trainingGetRE = regexp.MustCompile(`^/v1/trainings/([^/]+)$`)

func newAPI(t *testing.T, srv *replicatetest.Server) *api {
	target, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	a := &api{srv: srv}
	rp := httputil.NewSingleHostReverseProxy(target)
	a.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := trainingGetRE.FindStringSubmatch(r.URL.Path)
		if m == nil || r.Method != http.MethodGet {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		var got struct{ Status string }
		_ = json.Unmarshal(rec.Body.Bytes(), &got)
		// Only a training this GET finds still running counts: one that finished already (a slow,
		// busy machine) is recorded complete by this answer, and nothing in flight could be lost.
		if got.Status == "starting" || got.Status == "processing" {
			a.mu.Lock()
			if a.armed != nil {
				a.armed <- m[1]
				a.armed = nil
			}
			a.mu.Unlock()
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(a.proxy.Close)
	return a
}

// nextFollowed returns a channel that receives the id of the next training GET.
func (a *api) nextFollowed() <-chan string {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.armed = make(chan string, 1)
	return a.armed
}

// cluster runs the Job's pods on this machine: a directory laid out as the image (the root), an
// emptyDir per volume mount, the container's env with the Secret's value, and the loopback
// Replicate test server in place of the API.
type cluster struct {
	t        *testing.T
	m        manifests
	c        *corev1.Container
	root     string   // the image's / on this machine
	mounts   []string // the volume mounts, as paths under root
	srv      *replicatetest.Server
	api      *api
	token    string
	subjects []string
	shards   int
	image    map[string]bool // the files and directories of the image, relative to root
}

func newCluster(t *testing.T) *cluster {
	if testing.Short() {
		t.Skip("-short: builds cmd/pipeline and runs the Job's command")
	}
	for _, tool := range []string{"go", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not on PATH", tool)
		}
	}
	m := readManifests(t)
	img := readDockerfile(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	k := &cluster{t: t, m: m, c: container(t, m.job), root: t.TempDir(), shards: int(*m.job.Spec.Completions)}

	// The image: the binary built from ./cmd/pipeline and the files the last stage copies.
	for _, cp := range img.copies {
		dst := filepath.Join(k.root, cp[2])
		if cp[0] == "build" {
			// Built as the Dockerfile builds it: the run stage (alpine, musl) has no glibc loader,
			// so the binary must need none (the photo package's WebAssembly decoders link purego
			// unless -tags nodynamic).
			// The build's tags decide what is linked; its other flags only strip and trim, and
			// would cost a rebuild of everything here.
			tags := regexp.MustCompile(`-tags[= ](\S+)`).FindStringSubmatch(img.buildCmd)
			if !strings.Contains(img.buildCmd, "CGO_ENABLED=0") || tags == nil || !strings.Contains(tags[1], "nodynamic") {
				t.Fatalf("Dockerfile: build with CGO_ENABLED=0 and -tags nodynamic, so the binary needs no loader: %s", img.buildCmd)
			}
			args := []string{"build", "-tags", tags[1], "-o", dst, "./cmd/pipeline"}
			build := exec.Command("go", args...)
			build.Dir = repo
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			list := exec.Command("go", "list", "-deps", "-tags", tags[1], "./cmd/pipeline")
			list.Dir = repo
			deps, err := list.Output()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(deps), "github.com/ebitengine/purego") {
				t.Fatal("with the Dockerfile's tags the binary still links purego, which needs a C loader the run stage does not have")
			}
			continue
		}
		if cp[0] != "" {
			t.Fatalf("COPY --from=%s: unknown stage", cp[0])
		}
		copyTree(t, filepath.Join(repo, cp[1]), dst)
	}
	if err := os.MkdirAll(filepath.Join(k.root, img.workdir), 0o755); err != nil {
		t.Fatal(err)
	}
	// The volume mounts: the mount points exist in every pod, their contents are the pod's own.
	for _, vm := range k.c.VolumeMounts {
		dir := filepath.Join(k.root, vm.MountPath)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		k.mounts = append(k.mounts, dir)
	}
	k.image = snapshot(t, k.root, k.mounts...)
	// Read-only, as readOnlyRootFilesystem makes it. This binds only when the test is not root;
	// the snapshot comparison after each run binds always.
	t.Cleanup(func() {
		for p := range k.image {
			_ = os.Chmod(filepath.Join(k.root, p), 0o755)
		}
	})
	for p := range k.image {
		path := filepath.Join(k.root, p)
		if fi, err := os.Lstat(path); err == nil {
			_ = os.Chmod(path, fi.Mode().Perm()&^0o222)
		}
	}
	entries, err := os.ReadDir(filepath.Join(repo, "examples", "data"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			k.subjects = append(k.subjects, e.Name())
		}
	}
	k.token = "r8_k8s_test_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	// Trainings of 10 s: long enough that the deletion below lands while one runs (the first look is
	// poll_interval, 5 s, after the create).
	k.srv = replicatetest.NewServer(replicatetest.Options{Auto: true, Token: k.token, TrainingTime: 10 * time.Second})
	t.Cleanup(k.srv.Close)
	k.api = newAPI(t, k.srv)
	return k
}

// copyTree copies a file or a directory tree (what COPY does).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// snapshot lists every path under root (relative), the mounted volumes' contents left out.
func snapshot(t *testing.T, root string, skip ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if slices.Contains(skip, p) {
			return fs.SkipDir
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// newPod gives a pod fresh emptyDirs: a new pod starts with empty volumes.
func (k *cluster) newPod() {
	for _, dir := range k.mounts {
		entries, err := os.ReadDir(dir)
		if err != nil {
			k.t.Fatal(err)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				k.t.Fatal(err)
			}
		}
	}
}

// start starts the container's command for index with the state URL in place of the s3:// one.
func (k *cluster) start(index int, stateURL string) *pod {
	k.t.Helper()
	k.newPod()
	// The one Secret of the setup: the Replicate token under the name and key the comments
	// tell users to create (TestKubernetesJobPromises checks they agree).
	secrets := map[string]map[string]string{"replicate-api-token": {"REPLICATE_API_TOKEN": k.token}}
	// What the kubelet and the Job controller give the container, and what stands in for the
	// rest of the world: the image's PATH (a host directory for sh), HOME of the image's user
	// (not writable), /tmp under the root, and the test server.
	vars := map[string]string{"JOB_COMPLETION_INDEX": strconv.Itoa(index)}
	envv := []string{
		"JOB_COMPLETION_INDEX=" + strconv.Itoa(index),
		"PATH=" + filepath.Join(k.root, "usr/local/bin") + ":/usr/bin:/bin",
		"HOME=" + filepath.Join(k.root, "home/pipeline"),
		"TMPDIR=" + filepath.Join(k.root, "tmp"),
		"REPLICATE_BASE_URL=" + k.api.proxy.URL,
	}
	for _, e := range k.c.Env {
		v := expandK8s(e.Value, vars)
		if e.ValueFrom != nil {
			ref := e.ValueFrom.SecretKeyRef
			if ref == nil {
				k.t.Fatalf("env %s: the test resolves only secretKeyRef", e.Name)
			}
			s, ok := secrets[ref.Name][ref.Key]
			if !ok {
				k.t.Fatalf("env %s: no Secret %s with key %s", e.Name, ref.Name, ref.Key)
			}
			v = s
		}
		vars[e.Name] = v
		envv = append(envv, e.Name+"="+v)
	}
	argv := make([]string, len(k.c.Command))
	for i, a := range k.c.Command {
		argv[i] = expandK8s(a, vars)
	}
	if got := stateRE.FindAllStringIndex(argv[2], -1); len(got) != 1 {
		k.t.Fatalf("want one -state in the script, have %d", len(got))
	}
	argv[2] = stateRE.ReplaceAllLiteralString(argv[2], "-state '"+stateURL+"'")

	p := &pod{index: index, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = filepath.Join(k.root, k.c.WorkingDir)
	p.cmd.Env = envv
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p
}

// wait waits up to limit for the pod and returns its exit code (the kubelet's SIGKILL past it).
func (k *cluster) wait(p *pod, limit time.Duration) int {
	k.t.Helper()
	select {
	case <-p.done:
		var ee *exec.ExitError
		if p.err != nil && !errors.As(p.err, &ee) {
			k.t.Fatal(p.err)
		}
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-p.done
		k.t.Fatalf("index %d did not finish within %v; output:\n%s", p.index, limit, p.out.String())
	}
	// pipeline writes only to the mounted volumes: the image is as it was.
	var outside []string
	for path := range snapshot(k.t, k.root, k.mounts...) {
		if !k.image[path] {
			outside = append(outside, path)
		}
	}
	if len(outside) > 0 {
		slices.Sort(outside)
		k.t.Errorf("index %d wrote %d path(s) outside the volume mounts, which the read-only root would refuse: %s",
			p.index, len(outside), strings.Join(outside[:min(len(outside), 5)], ", "))
	}
	// The container's memory limit holds what the process needed.
	lim := k.c.Resources.Limits[corev1.ResourceMemory]
	if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		k.t.Logf("index %d: exit %d, peak RSS %d MiB", p.index, p.cmd.ProcessState.ExitCode(), ru.Maxrss/1024)
		if ru.Maxrss*1024 >= lim.Value() {
			k.t.Errorf("index %d peaked at %d MiB, over the memory limit %s", p.index, ru.Maxrss/1024, lim.String())
		}
	}
	return p.cmd.ProcessState.ExitCode()
}

// trainedRE is the line apply prints when a subject's training has finished.
var trainedRE = regexp.MustCompile(`(?m)^✓ train\.lora\["([^"]+)"\] complete: .*training_id=(\S+)`)

func TestKubernetesJobAcrossIndexes(t *testing.T) {
	k := newCluster(t)
	stateDir := t.TempDir()
	stateURL := "file://" + stateDir
	grace := time.Duration(*k.m.job.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second

	// 1. The Job: every index at once (parallelism = completions). Each exits 0, and every subject
	// is trained exactly once, by exactly one index.
	pods := make([]*pod, k.shards)
	for i := range pods {
		pods[i] = k.start(i, stateURL)
	}
	shardOf := map[string]int{}
	for i, p := range pods {
		if code := k.wait(p, 3*time.Minute); code != 0 {
			t.Fatalf("index %d exited %d:\n%s", i, code, p.out.String())
		}
		for _, m := range trainedRE.FindAllStringSubmatch(p.out.String(), -1) {
			if prev, dup := shardOf[m[1]]; dup {
				t.Errorf("%s trained by index %d and index %d", m[1], prev, i)
			}
			shardOf[m[1]] = i
		}
	}
	for _, s := range k.subjects {
		if _, ok := shardOf[s]; !ok {
			t.Errorf("no index trained %s", s)
		}
		if v := k.srv.VersionIDs("acme", s+"-lora"); len(v) != 1 {
			t.Errorf("acme/%s-lora has %d versions, want 1", s, len(v))
		}
	}
	if n := k.srv.Count("POST /v1/trainings"); n != len(k.subjects) {
		t.Fatalf("%d trainings for %d subjects", n, len(k.subjects))
	}
	st, err := state.OpenRemote(context.Background(), stateURL, "retrain")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keys, err := st.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, k.subjects) {
		t.Errorf("the state has %v, want one object per subject %v", keys, k.subjects)
	}

	// 2. A pod deleted while it follows a training (kubectl delete pod, a node drain): the kubelet
	// sends SIGTERM to the container's process, which exec made pipeline. It records the training,
	// releases the locks and exits 1 within the grace period; the training goes on at Replicate.
	// On a fresh state the index trains its subjects again.
	index := shardOf[k.subjects[0]]
	var inShard []string
	for s, i := range shardOf {
		if i == index {
			inShard = append(inShard, s)
		}
	}
	before := k.srv.Count("POST /v1/trainings")
	state2 := "file://" + t.TempDir()
	followed := k.api.nextFollowed()
	p := k.start(index, state2)
	var trainingID string
	select {
	case trainingID = <-followed:
	case <-p.done:
		t.Fatalf("index %d ended before it followed a training:\n%s", index, p.out.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("index %d never followed a training:\n%s", index, p.out.String())
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.cmd.Process.Pid)); err == nil && strings.TrimSpace(string(comm)) != "pipeline" {
		t.Errorf("the container's process is %q, not pipeline: without exec the shell gets the SIGTERM and pipeline is killed unrecorded", strings.TrimSpace(string(comm)))
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	code := k.wait(p, grace)
	if code == 0 {
		t.Fatalf("the deleted pod exited 0:\n%s", p.out.String())
	}
	if got := podFailureAction(k.m.job, int32(code)); got != batchv1.PodFailurePolicyActionCount {
		t.Errorf("a deleted pod exits %d, which the podFailurePolicy handles as %s: it must be retried (Count)", code, got)
	}
	if status := k.srv.TrainingStatus(trainingID); status == "canceled" {
		t.Errorf("the deletion canceled training %s: paid work must go on", trainingID)
	}
	t.Logf("SIGTERM to exit: %v (grace period %v)", time.Since(sent).Round(time.Millisecond), grace)
	st2, err := state.OpenRemote(context.Background(), state2, "retrain")
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	owner := ""
	for _, s := range inShard {
		in, err := st2.Get(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if in != nil && in.Records["train.lora"] != nil && bytes.Contains(in.Records["train.lora"].Data, []byte(trainingID)) {
			owner = s
		}
		// The locks are released: the replacement must not find them held and exit 4.
		probe, err := st2.Lock(context.Background(), s, state.NewLockInfo("probe"), 0)
		if err != nil {
			t.Fatalf("the deleted pod left %s locked: %v", s, err)
		}
		if err := probe.Unlock(); err != nil {
			t.Fatal(err)
		}
	}
	if owner == "" {
		t.Fatalf("no subject of index %d records training %s after SIGTERM:\n%s", index, trainingID, p.out.String())
	}

	// 3. The replacement pod of that index (new emptyDirs) re-attaches: it finishes the same
	// training, starts no second one for any subject, and exits 0.
	p = k.start(index, state2)
	if code := k.wait(p, 3*time.Minute); code != 0 {
		t.Fatalf("the replacement of index %d exited %d:\n%s", index, code, p.out.String())
	}
	var ids []string
	for _, m := range trainedRE.FindAllStringSubmatch(p.out.String(), -1) {
		if m[1] == owner {
			ids = append(ids, m[2])
		}
	}
	if !slices.Equal(ids, []string{trainingID}) {
		t.Errorf("the replacement finished %s's trainings %v, want the interrupted %s", owner, ids, trainingID)
	}
	if n := k.srv.Count("POST /v1/trainings") - before; n != len(inShard) {
		t.Errorf("the deleted pod and its replacement created %d trainings for the %d subject(s) %v of index %d: one was paid twice", n, len(inShard), inShard, index)
	}
	pods = append(pods, p)

	// The token never shows in a log or a state object.
	for i, p := range pods {
		if strings.Contains(p.out.String(), k.token) {
			t.Errorf("index %d's log contains the token", i)
		}
	}
	for _, dir := range []string{stateDir, strings.TrimPrefix(state2, "file://")} {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(k.token)) {
					t.Errorf("%s contains the token", p)
				}
			}
			return nil
		})
	}
}

func TestKubernetesCommandNeedsIndex(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("sh is not on PATH")
	}
	m := readManifests(t)
	c := container(t, m.job)
	// No pipeline on PATH: if the guard let the script through, exec would fail with 127.
	cmd := exec.Command(c.Command[0], c.Command[1:]...)
	cmd.Env = []string{"PATH=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 127 || !bytes.Contains(out, []byte("JOB_COMPLETION_INDEX")) {
		t.Errorf("without JOB_COMPLETION_INDEX the command must stop before pipeline, naming the variable; got %v:\n%s", err, out)
	}
}
