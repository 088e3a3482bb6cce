"""Checks of the release workflows and the chart tag script; run by .github/tests/run.sh.

Besides reading the YAML, it runs the workflows' own shell steps locally: the image job's
version/tags/build-time step with a fake GITHUB_OUTPUT, and the whole chart job with stand-ins
for helm and oras that record how they were called. Prints one line per check and a closing
'N passed, N failed, N skipped' line; exits 1 if any check failed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
CHART_VERSION_SH = REPO / ".github" / "scripts" / "chart-version.sh"

OWNER = "Open-Chat-Org"  # capitals on purpose: registry names must come out lower case
OWNER_LC = OWNER.lower()
SHA = "0123456789abcdef0123456789abcdef01234567"

PINNED_USES = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")
# The majors that run on the runners' Node 24 (the Node 20 ones are retired on GitHub's runners).
EXPECTED_ACTIONS = {
    "actions/checkout": "v5",
    "docker/setup-buildx-action": "v4",
    "docker/login-action": "v4",
    "docker/build-push-action": "v7",
    "azure/setup-helm": "v4",
}

results = {"passed": 0, "failed": 0, "skipped": 0}


class CheckFailed(Exception):
    pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


def check(name: str):
    def run(fn):
        try:
            fn()
        except CheckFailed as e:
            results["failed"] += 1
            print(f"FAIL  {name}: {e}")
        except Exception:  # noqa: BLE001 - a broken check is a failed check
            results["failed"] += 1
            print(f"FAIL  {name}: unexpected error")
            traceback.print_exc(limit=3, file=sys.stdout)
        else:
            results["passed"] += 1
            print(f"ok    {name}")
        return fn

    return run


def skip(name: str, why: str) -> None:
    results["skipped"] += 1
    print(f"skip  {name}: {why}")


# ---------------------------------------------------------------------------------------------
# Loading


def load(name: str) -> dict:
    path = WORKFLOWS / name
    expect(path.is_file(), f"{path} is missing")
    doc = yaml.safe_load(path.read_text())
    expect(isinstance(doc, dict), f"{name}: top level is not a mapping")
    return doc


def triggers(doc: dict) -> dict:
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True.
    keys = [k for k in (True, "on") if k in doc]
    expect(len(keys) == 1, f"expected exactly one `on:` key, found {keys!r}")
    on = doc[keys[0]]
    expect(isinstance(on, dict), f"`on:` is not a mapping: {on!r}")
    return on


def only_job(doc: dict) -> tuple[str, dict]:
    jobs = doc.get("jobs")
    expect(isinstance(jobs, dict) and len(jobs) == 1, f"expected one job, got {list(jobs or {})}")
    (name, job), = jobs.items()
    expect(isinstance(job.get("steps"), list) and job["steps"], f"job {name} has no steps")
    return name, job


def permissions(doc: dict, job: dict) -> dict:
    perms = dict(doc.get("permissions") or {})
    perms.update(job.get("permissions") or {})
    return perms


def step_using(job: dict, action: str) -> tuple[int, dict]:
    for i, step in enumerate(job["steps"]):
        if str(step.get("uses", "")).split("@")[0] == action:
            return i, step
    raise CheckFailed(f"no step uses {action}")


def step_running(job: dict, pattern: str) -> tuple[int, dict]:
    for i, step in enumerate(job["steps"]):
        if re.search(pattern, str(step.get("run", ""))):
            return i, step
    raise CheckFailed(f"no step runs /{pattern}/")


def all_uses(doc: dict) -> list[str]:
    out = []
    for job in (doc.get("jobs") or {}).values():
        if "uses" in job:
            out.append(job["uses"])
        for step in job.get("steps") or []:
            if "uses" in step:
                out.append(step["uses"])
    return out


# ---------------------------------------------------------------------------------------------
# Running a workflow's shell steps locally


EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def substitute(text: str, ctx: dict[str, str], env: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        expr = m.group(1)
        if expr.startswith("env."):
            return env.get(expr[4:], "")
        if expr in ctx:
            return ctx[expr]
        raise CheckFailed(f"the local runner does not know the expression ${{{{ {expr} }}}}")

    return EXPR.sub(one, str(text))


def run_step(step: dict, env: dict[str, str], ctx: dict[str, str], workdir: Path,
             path_prefix: str | None = None) -> subprocess.CompletedProcess:
    """Runs one `run:` step as a GitHub Linux runner would (default shell `bash -e`,
    `shell: bash` adds pipefail), with GITHUB_ENV / GITHUB_OUTPUT files."""
    script = substitute(step["run"], ctx, env)
    step_env = {k: substitute(v, ctx, env) for k, v in (step.get("env") or {}).items()}
    full = dict(os.environ)
    full.update(env)
    full.update(step_env)
    if path_prefix:
        full["PATH"] = path_prefix + os.pathsep + full["PATH"]
    shell = step.get("shell")
    expect(shell in (None, "bash"), f"step {step.get('name')!r} uses shell {shell!r}")
    argv = ["bash", "-e"] if shell is None else ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False, dir=workdir) as f:
        f.write(script)
    try:
        return subprocess.run(argv + [f.name], cwd=workdir, env=full, text=True,
                              capture_output=True, timeout=30)
    finally:
        os.unlink(f.name)


def parse_kv_file(path: Path) -> dict[str, str]:
    """Parses GITHUB_ENV / GITHUB_OUTPUT syntax: `k=v` lines and `k<<DELIM` blocks."""
    out: dict[str, str] = {}
    lines = path.read_text().split("\n") if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delim = line.split("<<", 1)
            value = []
            while i < len(lines) and lines[i] != delim:
                value.append(lines[i])
                i += 1
            expect(i < len(lines), f"unterminated {key}<<{delim} block")
            i += 1
            out[key] = "\n".join(value)
        else:
            expect("=" in line, f"malformed line {line!r}")
            key, value = line.split("=", 1)
            out[key] = value
    return out


def github_ctx(ref: str) -> dict[str, str]:
    ref_name = ref.split("/", 2)[2]
    return {
        "github.repository_owner": OWNER,
        "github.repository": f"{OWNER}/openchatd",
        "github.server_url": "https://github.com",
        "github.sha": SHA,
        "github.ref": ref,
        "github.ref_name": ref_name,
        "github.actor": "octocat",
        "secrets.GITHUB_TOKEN": "fake-token",
    }


def runner_env(ref: str, workdir: Path) -> dict[str, str]:
    return {
        "GITHUB_REF": ref,
        "GITHUB_REF_NAME": ref.split("/", 2)[2],
        "GITHUB_SHA": SHA,
        "GITHUB_ACTOR": "octocat",
        "GITHUB_REPOSITORY_OWNER": OWNER,
        "GITHUB_ENV": str(workdir / "github_env"),
        "GITHUB_OUTPUT": str(workdir / "github_output"),
        "CI": "true",
    }


# ---------------------------------------------------------------------------------------------
# image.yml


@check("image.yml: valid YAML with one job")
def _():
    only_job(load("image.yml"))


@check("image.yml: on push to branch main and tags v*, nothing else")
def _():
    on = triggers(load("image.yml"))
    expect(set(on) == {"push"}, f"events {sorted(map(str, on))}, want only push")
    push = on["push"]
    expect(push.get("branches") == ["main"], f"push.branches = {push.get('branches')!r}")
    expect(push.get("tags") == ["v*"], f"push.tags = {push.get('tags')!r}")
    expect(not ({"paths", "paths-ignore", "branches-ignore", "tags-ignore"} & set(push)),
           f"push filters that could skip a release: {sorted(push)}")


@check("image.yml: permissions contents: read, packages: write (and nothing more)")
def _():
    doc = load("image.yml")
    _, job = only_job(doc)
    perms = permissions(doc, job)
    expect(perms == {"contents": "read", "packages": "write"}, f"permissions = {perms!r}")


@check("image.yml: checkout, Buildx and ghcr.io login (GITHUB_TOKEN) before build-push")
def _():
    _, job = only_job(load("image.yml"))
    i_co, _ = step_using(job, "actions/checkout")
    i_bx, _ = step_using(job, "docker/setup-buildx-action")
    i_li, login = step_using(job, "docker/login-action")
    i_bp, _ = step_using(job, "docker/build-push-action")
    expect(i_co < i_bp and i_bx < i_bp and i_li < i_bp, "checkout/buildx/login must come first")
    w = login.get("with") or {}
    expect(w.get("registry") == "ghcr.io", f"login registry = {w.get('registry')!r}")
    expect(re.fullmatch(r"\$\{\{\s*secrets\.GITHUB_TOKEN\s*\}\}", str(w.get("password", ""))),
           f"login password = {w.get('password')!r}, want secrets.GITHUB_TOKEN")
    expect(re.fullmatch(r"\$\{\{\s*github\.actor\s*\}\}", str(w.get("username", ""))),
           f"login username = {w.get('username')!r}")


def image_build_step() -> tuple[dict, dict]:
    _, job = only_job(load("image.yml"))
    _, bp = step_using(job, "docker/build-push-action")
    return job, bp.get("with") or {}


def build_args(w: dict) -> dict[str, str]:
    args = {}
    for line in str(w.get("build-args", "")).splitlines():
        if line.strip():
            k, _, v = line.strip().partition("=")
            args[k] = v
    return args


@check("image.yml: pushes ghcr.io/${{ github.repository_owner }}/openchat-backend")
def _():
    job, w = image_build_step()
    expect(w.get("push") is True, f"push = {w.get('push')!r}")
    expect(w.get("context", ".") == ".", f"context = {w.get('context')!r}")
    image = (job.get("env") or {}).get("IMAGE", "")
    expect(image == "ghcr.io/${{ github.repository_owner }}/openchat-backend",
           f"job env IMAGE = {image!r}")
    expect(re.fullmatch(r"\$\{\{\s*steps\.meta\.outputs\.tags\s*\}\}", str(w.get("tags", ""))),
           f"tags = {w.get('tags')!r}, want the meta step's output")


@check("image.yml: build args BUILD_COMMIT=github.sha, BUILD_VERSION and BUILD_TIME from a step")
def _():
    job, w = image_build_step()
    args = build_args(w)
    expect(set(args) == {"BUILD_COMMIT", "BUILD_VERSION", "BUILD_TIME"}, f"build-args {args}")
    expect(re.fullmatch(r"\$\{\{\s*github\.sha\s*\}\}", args["BUILD_COMMIT"]),
           f"BUILD_COMMIT={args['BUILD_COMMIT']}")
    expect(re.fullmatch(r"\$\{\{\s*steps\.meta\.outputs\.version\s*\}\}", args["BUILD_VERSION"]),
           f"BUILD_VERSION={args['BUILD_VERSION']}")
    expect(re.fullmatch(r"\$\{\{\s*steps\.meta\.outputs\.build_time\s*\}\}", args["BUILD_TIME"]),
           f"BUILD_TIME={args['BUILD_TIME']}")
    metas = [s for s in job["steps"] if s.get("id") == "meta"]
    expect(len(metas) == 1 and "run" in metas[0], "no `run:` step with id meta")
    expect(job["steps"].index(metas[0]) < job["steps"].index(
        next(s for s in job["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action@"))),
        "the meta step must run before build-push")


def run_meta(ref: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    job, _ = image_build_step()
    meta = next(s for s in job["steps"] if s.get("id") == "meta")
    with tempfile.TemporaryDirectory() as d:
        wd = Path(d)
        ctx = github_ctx(ref)
        env = runner_env(ref, wd)
        env.update({k: substitute(v, ctx, env) for k, v in (job.get("env") or {}).items()})
        proc = run_step(meta, env, ctx, wd)
        return proc, parse_kv_file(wd / "github_output")


def check_build_time(value: str) -> None:
    expect(re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", value),
           f"build_time {value!r} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)")
    t = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    drift = abs((datetime.now(timezone.utc) - t).total_seconds())
    expect(drift < 120, f"build_time {value} is {drift:.0f}s away from now (not UTC?)")


@check("image.yml: meta step on main -> version main, tags :main and :sha-<short>, UTC time")
def _():
    proc, out = run_meta("refs/heads/main")
    expect(proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.strip()}")
    expect(out.get("version") == "main", f"version = {out.get('version')!r}")
    img = f"ghcr.io/{OWNER_LC}/openchat-backend"
    want = [f"{img}:main", f"{img}:sha-{SHA[:7]}"]
    expect(out.get("tags", "").split("\n") == want, f"tags = {out.get('tags')!r}, want {want}")
    check_build_time(out.get("build_time", ""))


@check("image.yml: meta step on tag v1.2.3 -> version v1.2.3, tag :v1.2.3 only")
def _():
    proc, out = run_meta("refs/tags/v1.2.3")
    expect(proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.strip()}")
    expect(out.get("version") == "v1.2.3", f"version = {out.get('version')!r}")
    want = [f"ghcr.io/{OWNER_LC}/openchat-backend:v1.2.3"]
    expect(out.get("tags", "").split("\n") == want, f"tags = {out.get('tags')!r}, want {want}")
    check_build_time(out.get("build_time", ""))


@check("image.yml: meta step refuses other refs and tags that cannot be image tags")
def _():
    for ref in ("refs/heads/feature", "refs/tags/v1/2"):
        proc, _ = run_meta(ref)
        expect(proc.returncode != 0, f"{ref} was accepted")


# ---------------------------------------------------------------------------------------------
# chart.yml


@check("chart.yml: valid YAML with one job")
def _():
    only_job(load("chart.yml"))


@check("chart.yml: on push of tags chart-v* only")
def _():
    on = triggers(load("chart.yml"))
    expect(set(on) == {"push"}, f"events {sorted(map(str, on))}, want only push")
    push = on["push"]
    expect(push.get("tags") == ["chart-v*"], f"push.tags = {push.get('tags')!r}")
    expect(set(push) == {"tags"}, f"push has more than tags: {sorted(push)}")


@check("chart.yml: permissions contents: read, packages: write (and nothing more)")
def _():
    doc = load("chart.yml")
    _, job = only_job(doc)
    perms = permissions(doc, job)
    expect(perms == {"contents": "read", "packages": "write"}, f"permissions = {perms!r}")


@check("chart.yml: tag checked by .github/scripts/chart-version.sh before helm is used")
def _():
    _, job = only_job(load("chart.yml"))
    i_v, step = step_running(job, r"\.github/scripts/chart-version\.sh")
    expect("GITHUB_ENV" in step["run"] and "VERSION=" in step["run"], "VERSION is not exported")
    i_h, helm = step_using(job, "azure/setup-helm")
    expect(re.fullmatch(r"v\d+\.\d+\.\d+", str((helm.get("with") or {}).get("version", ""))),
           "setup-helm does not pin a Helm version (with: version: vX.Y.Z)")
    i_l, _ = step_running(job, r"\bhelm lint\b")
    expect(i_v < i_l and i_h < i_l, "validation and setup-helm must come before helm lint")


@check("chart.yml: helm lint --strict, package --version/--app-version $VERSION, push to oci://ghcr.io/<owner>/charts, oras tag alias")
def _():
    _, job = only_job(load("chart.yml"))
    text = "\n".join(str(s.get("run", "")) for s in job["steps"])
    expect(re.search(r"helm lint --strict \"?(charts/openchat-backend|\$CHART_DIR)\"?", text),
           "no `helm lint --strict charts/openchat-backend`")
    expect(re.search(r'helm package \S+ --version "\$VERSION" --app-version "\$VERSION"', text),
           "no `helm package ... --version \"$VERSION\" --app-version \"$VERSION\"`")
    expect(re.search(r'helm push "?openchat-backend-\$VERSION\.tgz"? "?oci://ghcr\.io/', text),
           "no `helm push openchat-backend-$VERSION.tgz oci://ghcr.io/...`")
    expect(re.search(r"helm registry login ghcr\.io", text), "no `helm registry login ghcr.io`")
    expect(re.search(r'oras tag \S+:\$VERSION"? "?chart-v\$VERSION', text),
           "no `oras tag <ref>:$VERSION chart-v$VERSION`")
    env = (job.get("env") or {}) | {k: v for s in job["steps"] for k, v in (s.get("env") or {}).items()}
    expect(env.get("OWNER") == "${{ github.repository_owner }}", "OWNER is not github.repository_owner")
    expect(env.get("CHART_DIR", "charts/openchat-backend") == "charts/openchat-backend",
           f"CHART_DIR = {env.get('CHART_DIR')!r}")


def simulate_chart(tag: str) -> tuple[int, list[list[str]], str]:
    """Runs every `run:` step of the chart job in order (stopping at the first failure, as the
    runner does) with stand-ins for helm and oras; `uses:` steps are skipped. Returns the exit
    status, the recorded helm/oras calls and the output."""
    doc = load("chart.yml")
    _, job = only_job(doc)
    ref = f"refs/tags/{tag}"
    with tempfile.TemporaryDirectory() as d:
        wd = Path(d) / "work"
        (wd / ".github" / "scripts").mkdir(parents=True)
        (wd / ".github" / "scripts" / "chart-version.sh").write_bytes(CHART_VERSION_SH.read_bytes())
        (wd / "charts" / "openchat-backend").mkdir(parents=True)
        bin_dir = Path(d) / "bin"
        bin_dir.mkdir()
        log = Path(d) / "calls"
        for tool in ("helm", "oras"):
            stub = bin_dir / tool
            stub.write_text(
                "#!/usr/bin/env bash\n"
                f"printf '%s' {tool} >> {log}\n"
                f"for a in \"$@\"; do printf '\\t%s' \"$a\" >> {log}; done\n"
                f"echo >> {log}\n"
                # a password on stdin must really arrive
                'if [[ " $* " == *" --password-stdin "* ]]; then read -r pw || true;'
                ' [ "$pw" = fake-token ] || { echo "no token on stdin" >&2; exit 3; }; fi\n'
                # `helm package` makes the archive that `helm push` reads
                f'if [ "$1" = package ]; then v=""; while [ $# -gt 0 ]; do'
                ' [ "$1" = --version ] && v=$2; shift; done; touch "openchat-backend-$v.tgz"; fi\n'
                'if [ "$1" = push ] && [ ! -f "$2" ]; then echo "no such file $2" >&2; exit 4; fi\n'
            )
            stub.chmod(0o755)
        ctx = github_ctx(ref)
        env = runner_env(ref, Path(d))
        env.update({k: substitute(v, ctx, env) for k, v in (job.get("env") or {}).items()})
        output = []
        rc = 0
        for step in job["steps"]:
            if "run" not in step:
                continue
            step_env = dict(env)
            step_env.update(parse_kv_file(Path(env["GITHUB_ENV"])))
            proc = run_step(step, step_env, ctx, wd, path_prefix=str(bin_dir))
            output.append(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                rc = proc.returncode
                break
        calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
        return rc, calls, "".join(output)


@check("chart.yml: tag chart-v1.20.3 runs lint, package, login, push, oras tag with the right arguments in order")
def _():
    rc, calls, out = simulate_chart("chart-v1.20.3")
    expect(rc == 0, f"exit {rc}: {out.strip()[-400:]}")
    repo = f"ghcr.io/{OWNER_LC}/charts"
    want = [
        ["helm", "lint", "--strict", "charts/openchat-backend"],
        ["helm", "package", "charts/openchat-backend", "--version", "1.20.3", "--app-version", "1.20.3"],
        ["helm", "registry", "login", "ghcr.io", "--username", "octocat", "--password-stdin"],
        ["helm", "push", "openchat-backend-1.20.3.tgz", f"oci://{repo}"],
        ["oras", "login", "ghcr.io", "--username", "octocat", "--password-stdin"],
        ["oras", "tag", f"{repo}/openchat-backend:1.20.3", "chart-v1.20.3"],
    ]
    got = [c for c in calls if c[:2] != ["oras", "manifest"]]
    expect(got == want, "calls were:\n      " + "\n      ".join(" ".join(c) for c in calls))


@check("chart.yml: a bad tag (chart-v1.2.3-rc1) stops the job with a message before helm runs")
def _():
    rc, calls, out = simulate_chart("chart-v1.2.3-rc1")
    expect(rc != 0, "the job went on")
    expect(calls == [], f"helm/oras were called: {calls}")
    expect("chart-v1.2.3-rc1" in out and "chart-vX.Y.Z" in out, f"unclear message: {out.strip()!r}")


# ---------------------------------------------------------------------------------------------
# Both


@check("every `uses:` is pinned to a version tag or commit; the named actions at their majors")
def _():
    seen = {}
    for name in ("image.yml", "chart.yml"):
        for uses in all_uses(load(name)):
            expect(PINNED_USES.fullmatch(uses), f"{name}: `uses: {uses}` is not pinned")
            action, _, version = uses.partition("@")
            seen[action] = version
    for action, major in EXPECTED_ACTIONS.items():
        expect(seen.get(action) == major, f"{action}@{seen.get(action)}, want @{major}")


GOOD_TAGS = {"chart-v0.1.0": "0.1.0", "chart-v1.20.3": "1.20.3"}
BAD_TAGS = ["chart-v1.2", "chart-v01.2.3", "chart-v1.2.3-rc1", "v1.2.3",
            "chart-v1.2.3\n", "chart-v1.2.3 ", "chart-v1.02.3", " chart-v1.2.3", ""]


@check("chart-version.sh: good tags print X.Y.Z")
def _():
    for tag, version in GOOD_TAGS.items():
        p = subprocess.run(["bash", str(CHART_VERSION_SH), tag], capture_output=True, text=True)
        expect(p.returncode == 0, f"{tag!r}: exit {p.returncode}, {p.stderr.strip()}")
        expect(p.stdout == version + "\n", f"{tag!r}: printed {p.stdout!r}, want {version!r}")


@check("chart-version.sh: bad tags exit 1 with a message and print nothing")
def _():
    for tag in BAD_TAGS:
        p = subprocess.run(["bash", str(CHART_VERSION_SH), tag], capture_output=True, text=True)
        expect(p.returncode == 1, f"{tag!r}: exit {p.returncode}, printed {p.stdout!r}")
        expect(p.stdout == "", f"{tag!r}: printed {p.stdout!r}")
        expect("chart-vX.Y.Z" in p.stderr, f"{tag!r}: message {p.stderr!r}")
    for argv in ([], ["chart-v1.2.3", "extra"]):
        p = subprocess.run(["bash", str(CHART_VERSION_SH), *argv], capture_output=True, text=True)
        expect(p.returncode == 1 and "usage" in p.stderr, f"argv {argv}: exit {p.returncode}")


def actionlint() -> None:
    name = "actionlint on both workflows"
    state = os.environ.get("ACTIONLINT_STATE", "")
    binary = os.environ.get("ACTIONLINT_BIN", "")
    if state != "installed" or not os.access(binary, os.X_OK):
        skip(name, state or "not installed")
        return

    @check(name)
    def _():
        p = subprocess.run([binary, str(WORKFLOWS / "image.yml"), str(WORKFLOWS / "chart.yml")],
                           capture_output=True, text=True, cwd=REPO)
        expect(p.returncode == 0, (p.stdout + p.stderr).strip())


actionlint()

print(f"{results['passed']} passed, {results['failed']} failed, {results['skipped']} skipped")
sys.exit(1 if results["failed"] else 0)
