"""deploy_test — every file under deploy/ checked by the tool its users run it with, plus the
cross-checks between them that no single tool makes.

Usage: deploy_test.py REPO_ROOT DECOSERVE

- deploy/systemd: `systemd-analyze verify` in a scratch root holding the unit and the binary at
  the unit's ExecStart path (a clean unit prints nothing; a typo is only a warning, so any output
  fails).
- deploy/kubernetes: `kubectl kustomize` of each kustomization, `kubernetes-validate --strict` on
  the built-in kinds, the custom resources (LeaderWorkerSet, InferencePool) against the
  openAPIV3Schema of their CRDs kept in deploy/kubernetes/crds (unknown fields rejected, as
  kubectl's strict field validation does); each validator is also shown a broken copy, which it
  must reject.
- deploy/envoy: `envoy --mode validate` on every config (no deprecated field either); the live
  test is envoy_test.
- deploy/container/Containerfile (no container runtime here): statically, see check_containerfile.
- Between them: every flag a manifest, the unit or the image passes is one `decoserve serve`
  takes; probe and scrape ports are the ports decoserve listens on; terminationGracePeriodSeconds
  and TimeoutStopSec cover preStop + --shutdown-timeout + --shutdown-grace; LWS pods leave the
  node flags to LWS.
Prints one line per check, then "N passed, N failed".
"""

import copy
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from checks import run_checks  # noqa: E402

REPO, DECOSERVE = sys.argv[1:3]
DEPLOY = os.path.join(REPO, "deploy")
TMP = os.environ.get("TEST_TMPDIR") or tempfile.mkdtemp()
# kustomize takes no kustomization.yaml that is a link (as in Bazel's runfiles): a copy.
KUBE = os.path.join(TMP, "kubernetes")
shutil.copytree(os.path.join(DEPLOY, "kubernetes"), KUBE, dirs_exist_ok=True)
KUSTOMIZATIONS = ["base", "lws", "inferencepool"]
CRDS = {  # (apiVersion, kind) -> the CRD file in deploy/kubernetes/crds
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"):
        "leaderworkerset.x-k8s.io_leaderworkersets.yaml",
    ("inference.networking.k8s.io/v1", "InferencePool"):
        "inference.networking.k8s.io_inferencepools.yaml",
}
# Libraries every Debian image has (the C library, libgcc: what the essential packages need).
BASE_IMAGE_PACKAGES = {"libc6", "libgcc-s1"}
UID = 10001  # the image's user, which the pods run as
HTTP_PORT, GRPC_PORT = 8000, 50051


def run(*cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def serve_flags():
    out = run(DECOSERVE, "serve", "--help")
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"--[a-z][a-z0-9-]*", out.stdout))


SERVE_FLAGS = serve_flags()


def check_flags(where, args):
    """args (a decoserve command line after the binary) uses only `serve`'s flags."""
    assert args[0] == "serve", (where, args)
    for a in args[1:]:
        if a.startswith("--"):
            assert a in SERVE_FLAGS, "%s: %s is not a `decoserve serve` flag" % (where, a)


def flag_value(args, flag):
    return args[args.index(flag) + 1] if flag in args else None


def drain_seconds(args):
    """The longest SIGTERM drain of a serve command line: --shutdown-timeout for in-flight
    requests, then --shutdown-grace before open calls are cut (serve's defaults: 30, 5)."""
    timeout = flag_value(args, "--shutdown-timeout")
    grace = flag_value(args, "--shutdown-grace")
    return float(timeout if timeout is not None else 30) + float(grace if grace is not None else 5)


# --- systemd ----------------------------------------------------------------------------------

UNIT = os.path.join(DEPLOY, "systemd", "decoserve.service")


def unit_exec_start():
    text = open(UNIT).read().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line[len("ExecStart="):])


def systemd_verify(unit_path, with_binary=True):
    """systemd-analyze verify of unit_path in a scratch root; (returncode, output)."""
    root = tempfile.mkdtemp(dir=TMP)
    exe = unit_exec_start()[0]
    os.makedirs(root + "/etc/systemd/system")
    os.makedirs(root + "/usr/lib/systemd")
    # The system's own units (the targets ours orders after), copied: verify does not follow
    # links out of the root.
    shutil.copytree("/usr/lib/systemd/system", root + "/usr/lib/systemd/system", symlinks=True)
    if with_binary:
        os.makedirs(os.path.dirname(root + exe))
        shutil.copy(DECOSERVE, root + exe)
    name = os.path.basename(unit_path)
    shutil.copy(unit_path, root + "/etc/systemd/system/" + name)
    out = run("systemd-analyze", "verify", "--root=" + root, "/etc/systemd/system/" + name)
    return out.returncode, (out.stdout + out.stderr).strip()


def check_systemd_unit_verifies():
    rc, out = systemd_verify(UNIT)
    assert rc == 0 and out == "", "systemd-analyze verify: rc %d: %s" % (rc, out)
    # It can fail: a typo'd setting, and a unit whose binary is missing.
    bad = os.path.join(TMP, "decoserve.service")
    with open(bad, "w") as f:
        f.write(open(UNIT).read().replace("Restart=on-failure", "Restart=sometimes"))
    rc, out = systemd_verify(bad)
    assert "sometimes" in out, "a bad Restart= passed: rc %d: %s" % (rc, out)
    rc, out = systemd_verify(UNIT, with_binary=False)
    assert rc != 0 and "not executable" in out, (rc, out)


def check_systemd_unit_flags_and_stop_timeout():
    args = unit_exec_start()
    assert args[0] == "/usr/local/bin/decoserve", args
    check_flags(UNIT, args[1:])
    text = open(UNIT).read()
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M).group(1))
    drain = drain_seconds(args)
    assert stop >= drain + 10, "TimeoutStopSec=%d does not cover the drain (%g s)" % (stop, drain)
    assert re.search(r"^KillSignal=SIGTERM$", text, re.M), "decoserve drains on SIGTERM"


# --- Kubernetes -------------------------------------------------------------------------------


def kustomize(name):
    out = run("kubectl", "kustomize", os.path.join(KUBE, name))
    assert out.returncode == 0, "kubectl kustomize %s: %s" % (name, out.stderr)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


BUILT = {}


def built(name):
    if name not in BUILT:
        BUILT[name] = kustomize(name)
    return BUILT[name]


def one(name, kind):
    """The one resource of kind that kustomization name builds."""
    (r,) = [r for r in built(name) if r["kind"] == kind]
    return r


def is_custom(resource):
    return (resource["apiVersion"], resource["kind"]) in CRDS


def kubernetes_validate(resources):
    """kubernetes-validate --strict on resources; (returncode, output)."""
    path = os.path.join(TMP, "resources.yaml")
    with open(path, "w") as f:
        yaml.safe_dump_all(resources, f)
    out = run("kubernetes-validate", "--strict", "--quiet", path)
    return out.returncode, out.stdout + out.stderr


def strict(schema):
    """A CRD's structural schema as JSON Schema with unknown fields rejected (what kubectl's
    default strict field validation does), except where the CRD preserves them."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if not isinstance(s, dict):
            return
        if ("properties" in s and "additionalProperties" not in s and
                not s.get("x-kubernetes-preserve-unknown-fields")):
            s["additionalProperties"] = False
        if s.get("x-kubernetes-int-or-string"):
            s.pop("type", None)
            s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        for v in list(s.values()):
            if isinstance(v, dict):
                walk(v)
            elif isinstance(v, list):
                for x in v:
                    walk(x)
        for v in s.get("properties", {}).values():
            walk(v)

    walk(schema)
    return schema


SCHEMAS = {}


def crd_schema(resource):
    key = (resource["apiVersion"], resource["kind"])
    if key not in SCHEMAS:
        crd = yaml.safe_load(open(os.path.join(KUBE, "crds", CRDS[key])))
        version = key[0].split("/")[1]
        (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
        assert v["served"], "%s %s is not served" % key
        SCHEMAS[key] = strict(v["schema"]["openAPIV3Schema"])
    return SCHEMAS[key]


def crd_errors(resource):
    validator = jsonschema.Draft7Validator(crd_schema(resource))
    return ["%s: %s" % ("/".join(map(str, e.absolute_path)), e.message)
            for e in validator.iter_errors(resource)]


def check_kustomize_and_validate():
    for name in KUSTOMIZATIONS:
        resources = built(name)
        assert resources, name + ": built nothing"
        core = [r for r in resources if not is_custom(r)]
        if core:
            rc, out = kubernetes_validate(core)
            assert rc == 0 and "WARN" not in out, "%s: kubernetes-validate: %s" % (name, out)
        for r in resources:
            if is_custom(r):
                errors = crd_errors(r)
                assert not errors, "%s: %s/%s: %s" % (name, r["kind"], r["metadata"]["name"],
                                                      errors)
    kinds = sorted({r["kind"] for n in KUSTOMIZATIONS for r in built(n)})
    assert kinds == ["Deployment", "InferencePool", "LeaderWorkerSet", "Service"], kinds


def check_validators_reject_broken_manifests():
    dep = one("base", "Deployment")
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    rc, out = kubernetes_validate([bad])
    assert rc != 0 and "httpGett" in out, "kubernetes-validate took an unknown field: " + out
    bad = copy.deepcopy(dep)
    bad["spec"]["replicas"] = "two"
    assert kubernetes_validate([bad])[0] != 0, "kubernetes-validate took replicas: 'two'"
    lws = one("lws", "LeaderWorkerSet")
    bad = copy.deepcopy(lws)
    bad["spec"]["leaderWorkerTemplate"]["sise"] = 2
    assert any("sise" in e for e in crd_errors(bad)), "LWS schema took an unknown field"
    bad = copy.deepcopy(lws)
    bad["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["argz"] = []
    assert any("argz" in e for e in crd_errors(bad)), "LWS pod template took an unknown field"
    bad = copy.deepcopy(one("inferencepool", "InferencePool"))
    bad["spec"]["targetPorts"] = [{"number": 70000}]
    assert crd_errors(bad), "InferencePool took port 70000"


def pod_specs():
    """(where, pod spec, role) of every pod the manifests make; role: server or follower."""
    out = []
    for r in built("base"):
        if r["kind"] == "Deployment":
            out.append(("Deployment/" + r["metadata"]["name"], r["spec"]["template"]["spec"],
                        "server"))
    for r in built("lws"):
        if r["kind"] == "LeaderWorkerSet":
            t = r["spec"]["leaderWorkerTemplate"]
            out.append(("LeaderWorkerSet leader", t["leaderTemplate"]["spec"], "server"))
            out.append(("LeaderWorkerSet worker", t["workerTemplate"]["spec"], "follower"))
    return out


def check_pods_match_decoserve():
    for where, spec, role in pod_specs():
        (c,) = spec["containers"]
        args = c["args"]
        check_flags(where, args)
        assert spec["securityContext"]["runAsUser"] == UID, where
        assert c["resources"]["limits"]["nvidia.com/gpu"], where
        if role == "follower":
            assert "readinessProbe" not in c and "ports" not in c, where + ": a worker serves nothing"
            continue
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["grpc"] == int(flag_value(args, "--port")) == GRPC_PORT, (where, ports)
        assert ports["http"] == int(flag_value(args, "--http-port")) == HTTP_PORT, (where, ports)
        assert flag_value(args, "--host") == "0.0.0.0", where + ": pods must listen beyond loopback"
        # gRPC probe on the gRPC port, HTTP readiness and liveness on the HTTP port.
        grpc_probe = c["startupProbe"]["grpc"]
        assert grpc_probe["port"] == GRPC_PORT, where
        assert grpc_probe["service"] == "decoserve.v1.Decoserve", where
        assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}, where
        assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}, where
        # Drain: preStop, then SIGTERM, --shutdown-timeout and --shutdown-grace, within the
        # grace period.
        pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "/bin/sleep", (where, pre_stop)
        drain = drain_seconds(args)
        need = int(pre_stop[1]) + drain + 10
        assert spec["terminationGracePeriodSeconds"] >= need, (
            "%s: terminationGracePeriodSeconds %d < preStop %s + drain %g + 10" %
            (where, spec["terminationGracePeriodSeconds"], pre_stop[1], drain))


def check_prometheus_annotations():
    dep, lws = one("base", "Deployment"), one("lws", "LeaderWorkerSet")
    for where, meta in (("Deployment", dep["spec"]["template"]["metadata"]),
                        ("LWS leader", lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
                         ["metadata"])):
        a = meta["annotations"]
        assert a["prometheus.io/scrape"] == "true", where
        assert a["prometheus.io/port"] == str(HTTP_PORT) and a["prometheus.io/path"] == "/metrics"


def check_services_and_pool_select_the_pods():
    dep = one("base", "Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    services = [r for r in built("base") if r["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"decoserve", "decoserve-replicas"}
    for s in services:
        assert s["spec"]["selector"].items() <= labels.items(), s["metadata"]["name"]
        for p in s["spec"]["ports"]:
            assert p["targetPort"] in ("grpc", "http"), p
    (headless,) = [s for s in services if s["spec"].get("clusterIP") == "None"]
    envoy = yaml.safe_load(open(os.path.join(DEPLOY, "envoy", "envoy.yaml")))
    (cluster,) = envoy["static_resources"]["clusters"]
    addr = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert addr["socket_address"]["address"].startswith(headless["metadata"]["name"] + "."), addr
    assert addr["socket_address"]["port_value"] == GRPC_PORT, addr
    pool = one("inferencepool", "InferencePool")
    assert pool["spec"]["selector"]["matchLabels"].items() <= labels.items(), pool
    assert pool["spec"]["targetPorts"] == [{"number": HTTP_PORT}], pool


def check_lws_leaves_node_flags_to_lws():
    t = one("lws", "LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]
    leader = t["leaderTemplate"]["spec"]["containers"][0]["args"]
    worker = t["workerTemplate"]["spec"]["containers"][0]["args"]
    assert leader == worker, "leader and workers must run one command line"
    for flag in ("--nnodes", "--node-rank", "--master-addr"):
        assert flag not in leader, flag + ": LWS gives it (LWS_GROUP_SIZE, ...)"
    assert flag_value(leader, "--master-port"), "LWS gives no port: --master-port is needed"
    tp = int(flag_value(leader, "--tensor-parallel"))
    gpus = int(t["leaderTemplate"]["spec"]["containers"][0]["resources"]["limits"]
               ["nvidia.com/gpu"])
    assert tp == t["size"] * gpus, "--tensor-parallel %d != %d pods x %d GPUs" % (tp, t["size"],
                                                                                 gpus)
    svc = one("lws", "Service")
    assert svc["spec"]["selector"] == {"leaderworkerset.sigs.k8s.io/name": "decoserve-tp",
                                       "leaderworkerset.sigs.k8s.io/worker-index": "0"}, svc


# --- Envoy ------------------------------------------------------------------------------------


def check_envoy_configs_validate():
    configs = sorted(glob.glob(os.path.join(DEPLOY, "envoy", "*.yaml")))
    assert configs, "no Envoy config"
    for path in configs:
        out = run("envoy", "--mode", "validate", "-c", path)
        log = out.stdout + out.stderr
        assert out.returncode == 0 and " OK" in log, "%s: %s" % (path, log)
        assert "Deprecated" not in log, "%s uses a deprecated field: %s" % (path, log)
    bad = os.path.join(TMP, "bad-envoy.yaml")
    with open(bad, "w") as f:
        f.write(open(configs[0]).read().replace("unhealthy_threshold", "unhealthy_treshold"))
    assert run("envoy", "--mode", "validate", "-c", bad).returncode != 0, "envoy took a typo"


# --- Containerfile ----------------------------------------------------------------------------

CONTAINERFILE = os.path.join(DEPLOY, "container", "Containerfile")


def instructions():
    """The Containerfile's (INSTRUCTION, text) pairs, continuation lines joined."""
    out, cur = [], ""
    for line in open(CONTAINERFILE):
        s = line.rstrip("\n")
        if not cur and (not s.strip() or s.lstrip().startswith("#")):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        word, _, rest = cur.strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        cur = ""
    return out


def readme_commands():
    """The README's two commands (the first sh block's lines, comments cut)."""
    text = open(os.path.join(REPO, "README.md")).read()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    return [ln.split("#")[0].strip() for ln in block.strip().splitlines()]


def needed_packages():
    """The Debian package of each library decoserve links (DT_NEEDED)."""
    out = run("ldd", DECOSERVE)
    assert out.returncode == 0, out.stderr
    direct = run("readelf", "-d", DECOSERVE).stdout
    pkgs = {}
    for line in out.stdout.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if not m or re.match(r"lib(a|ub)san", m.group(1)):  # the image is built without ASan
            continue
        if "[%s]" % m.group(1) not in direct:
            continue
        for path in (m.group(2), os.path.realpath(m.group(2))):
            q = run("dpkg", "-S", path)
            if q.returncode == 0:
                pkgs[m.group(1)] = q.stdout.split(":")[0]
                break
        else:
            raise AssertionError("%s: no Debian package holds %s" % (m.group(1), m.group(2)))
    return pkgs


def check_containerfile():
    ins = instructions()
    args = {m.group(1): m.group(2) for w, t in ins if w == "ARG"
            for m in [re.match(r"(\w+)(?:=(\S*))?", t)]}
    assert args["BASE"] == "debian:bookworm", args
    assert args["RUNTIME_BASE"] == "debian:bookworm-slim", args
    froms = [t for w, t in ins if w == "FROM"]
    assert froms == ["${BASE} AS build", "${RUNTIME_BASE}"], froms
    runs = [t for w, t in ins if w == "RUN"]
    # The README's commands, verbatim: the first always, the test command with TEST=1.
    first, test = readme_commands()
    assert first in runs, "no RUN %r (README's first command): %s" % (first, runs)
    assert any(test in r for r in runs), "README's test command %r is not in a RUN" % test
    # Every repository script a RUN names exists and is executable.
    for r in runs:
        for script in re.findall(r"\btools/[\w./-]+", r):
            path = os.path.join(REPO, script)
            assert os.access(path, os.X_OK), "Containerfile runs %s: missing" % script
        for label in re.findall(r"//[\w/]*:[\w-]+", r):  # the target this test was built with
            assert label == "//server:decoserve", "Containerfile builds %s" % label
    # The quickstart builds the binary the image copies.
    quick = open(os.path.join(REPO, "tools", "quickstart.sh")).read()
    assert "bazel build -c opt //server:decoserve" in quick
    assert any("bazel info -c opt $BAZEL_FLAGS bazel-bin)/server/decoserve" in r for r in runs)
    # The runtime packages hold every library the binary links, or come with every Debian image.
    runtime = next(r for r in runs if "apt-get install" in r)
    listed = set(runtime.split("--no-install-recommends", 1)[1].split("&&")[0].split())
    for lib, pkg in sorted(needed_packages().items()):
        assert pkg in listed or pkg in BASE_IMAGE_PACKAGES, (
            "decoserve links %s (package %s): not installed in the runtime stage" % (lib, pkg))
    for pkg in listed:  # and each listed name is a real package (installed here, so known)
        assert run("dpkg-query", "-W", pkg).returncode == 0, pkg + ": not a Debian package"
    # User, ports, default command.
    assert "--uid %d" % UID in runtime, "the image's user is not uid %d" % UID
    assert ("USER", "%d:%d" % (UID, UID)) in ins
    assert ("EXPOSE", "%d %d" % (GRPC_PORT, HTTP_PORT)) in ins
    assert ("ENTRYPOINT", '["/usr/local/bin/decoserve"]') in ins
    cmd = yaml.safe_load(next(t for w, t in ins if w == "CMD"))
    check_flags("Containerfile CMD", cmd)
    assert flag_value(cmd, "--model").startswith("/opt/decoserve/models/"), cmd
    # The build context leaves out Bazel's output links and .git.
    ignore = open(os.path.join(REPO, ".dockerignore")).read().split()
    assert "bazel-*" in ignore and ".git" in ignore, ignore


CHECKS = [
    check_systemd_unit_verifies,
    check_systemd_unit_flags_and_stop_timeout,
    check_kustomize_and_validate,
    check_validators_reject_broken_manifests,
    check_pods_match_decoserve,
    check_prometheus_annotations,
    check_services_and_pool_select_the_pods,
    check_lws_leaves_node_flags_to_lws,
    check_envoy_configs_validate,
    check_containerfile,
]

passed, failed = run_checks(CHECKS)
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
