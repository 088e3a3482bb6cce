"""Assertions on the chart's rendered manifests (run by tests/run.sh with the venv's Python).

usage: assert_chart.py RENDER_DIR CHART_DIR REPO_README

RENDER_DIR holds one `helm template` output per value set of tests/values/, named
<set>.yaml. Prints one line per check ("ok - ..." or "FAIL - ...") and exits 1 on a failure.
"""

import base64
import json
import os
import re
import sys

import yaml

GOOGLE_STUN = [
    "stun:stun.l.google.com:19302",
    "stun:stun1.l.google.com:19302",
    "stun:stun2.l.google.com:19302",
    "stun:stun3.l.google.com:19302",
    "stun:stun4.l.google.com:19302",
]

failures = 0
passes = 0


def check(name, cond, detail=""):
    global failures, passes
    if cond:
        passes += 1
        print(f"ok - {name}")
    else:
        failures += 1
        print(f"FAIL - {name}" + (f": {detail}" if detail else ""))


def load(render_dir, name):
    with open(os.path.join(render_dir, name + ".yaml")) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def of_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind, name=None):
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def server(docs):
    return one(docs, "Deployment", "openchat-backend")


def container(dep, name="openchatd"):
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def env_value(c, name):
    e = env_of(c).get(name)
    return None if e is None else e.get("value")


def secret_data(docs):
    out = {}
    for s in of_kind(docs, "Secret"):
        data = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        data.update(s.get("stringData") or {})
        out[s["metadata"]["name"]] = data
    return out


def secret_ref(c, name):
    e = env_of(c).get(name) or {}
    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
    return None if ref is None else (ref["name"], ref["key"])


def configmap_text(docs):
    return "\n".join(
        json.dumps(cm.get("data") or {}) + json.dumps(cm.get("binaryData") or {})
        for cm in of_kind(docs, "ConfigMap")
    )


def cpu_int(q):
    s = str(q)
    if re.fullmatch(r"[1-9][0-9]*", s):
        return int(s)
    if re.fullmatch(r"[1-9][0-9]*000m", s):
        return int(s[:-4])
    return None


def common(set_name, docs, chart_dir, readme_vars):
    dep = server(docs)
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    env = env_of(c)
    tag = f"[{set_name}]"

    # Shards and their hostPorts.
    shards = int(env_value(c, "OPENCHAT_SHARDS"))
    base = int(env_value(c, "OPENCHAT_RTC_UDP_PORT"))
    udp = [p for p in c["ports"] if p.get("protocol") == "UDP"]
    check(f"{tag} one UDP hostPort per shard ({shards}: {base}..{base + shards - 1})",
          [p.get("hostPort") for p in udp] == list(range(base, base + shards))
          and [p["containerPort"] for p in udp] == list(range(base, base + shards)),
          str(udp))

    # Probes.
    probes = {k: c.get(k, {}).get("httpGet", {}) for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    check(f"{tag} startup and liveness probes GET /healthz, readiness GET /readyz",
          probes["startupProbe"].get("path") == "/healthz"
          and probes["livenessProbe"].get("path") == "/healthz"
          and probes["readinessProbe"].get("path") == "/readyz"
          and all(p.get("port") == "http" for p in probes.values()), str(probes))

    # Security context.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(f"{tag} pod runs as non-root uid/gid 10001 (fsGroup 10001)",
          psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001
          and psc.get("runAsGroup") == 10001 and psc.get("fsGroup") == 10001, str(psc))
    check(f"{tag} container: readOnlyRootFilesystem, no privilege escalation, capabilities drop ALL",
          csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False
          and csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc.get("capabilities", {}).get("add"),
          str(csc))
    sp = psc.get("seccompProfile", {})
    if sp.get("type") == "Localhost":
        path = os.path.join(chart_dir, "files", "seccomp", os.path.basename(sp.get("localhostProfile", "")))
        ok = os.path.exists(path)
        if ok:
            prof = json.load(open(path))
            allowed = {n for s in prof["syscalls"] if s["action"] == "SCMP_ACT_ALLOW" for n in s["names"]}
            ok = prof["defaultAction"] == "SCMP_ACT_ERRNO" and {
                "io_uring_setup", "io_uring_enter", "io_uring_register"} <= allowed and not (
                {"mount", "ptrace", "bpf", "kexec_load", "unshare", "setns", "init_module"} & allowed)
        check(f"{tag} seccomp Localhost {sp.get('localhostProfile')}: shipped in files/seccomp, allows io_uring, default deny",
              ok, path)
    else:
        check(f"{tag} seccomp profile explicit ({sp.get('type')})", sp.get("type") in ("Unconfined",), str(sp))

    # Grace period from the same value as the shutdown timeout.
    tgps = pod.get("terminationGracePeriodSeconds")
    shutdown_ms = int(env_value(c, "OPENCHAT_SHUTDOWN_TIMEOUT_MS"))
    drain_ms = int(env_value(c, "OPENCHAT_SHUTDOWN_DRAIN_DELAY_MS"))
    check(f"{tag} terminationGracePeriodSeconds ({tgps}) > drain delay ({drain_ms} ms) + OPENCHAT_SHUTDOWN_TIMEOUT_MS ({shutdown_ms} ms)",
          tgps is not None and tgps * 1000 > drain_ms + shutdown_ms)
    check(f"{tag} a drain delay of a few seconds (readiness off before the listener closes)", 1000 <= drain_ms <= 120000, str(drain_ms))

    # Ticket secret from a Secret, never a literal.
    ref = secret_ref(c, "OPENCHAT_RTC_TICKET_SECRET")
    check(f"{tag} OPENCHAT_RTC_TICKET_SECRET from a Secret", ref is not None and "value" not in env["OPENCHAT_RTC_TICKET_SECRET"], str(env.get("OPENCHAT_RTC_TICKET_SECRET")))
    secrets = secret_data(docs)
    if ref and ref[0] in secrets:
        check(f"{tag} generated ticket secret has >= 32 characters", len(secrets[ref[0]].get(ref[1], "")) >= 32)

    # No secret in a ConfigMap: every value of every Secret, the database URL, the TURN password.
    cm = configmap_text(docs)
    leaked = [f"{n}/{k}" for n, d in secrets.items() for k, v in d.items() if v and v in cm]
    check(f"{tag} no Secret value appears in any ConfigMap", not leaked, str(leaked))
    for name in ("OPENCHAT_DATABASE_URL", "OPENCHAT_RTC_TURN_CREDENTIAL", "OPENCHAT_RTC_TURN_SECRET",
                 "OPENCHAT_RTC_TICKET_SECRET", "OPENCHAT_EVIDENCE_KEY"):
        if name in env:
            check(f"{tag} {name} comes from a secretKeyRef, not a literal", secret_ref(c, name) is not None, str(env[name]))
    check(f"{tag} the backend reads no env from ConfigMaps",
          not any("configMapKeyRef" in (e.get("valueFrom") or {}) for e in env.values())
          and not any("configMapRef" in s for s in c.get("envFrom", [])))

    # Every variable the chart sets is one openchatd knows (an unknown OPENCHAT_* stops the start).
    unknown = sorted(n for n in env if n not in readme_vars)
    check(f"{tag} every OPENCHAT_* variable set is in the README's Configuration table", not unknown, str(unknown))

    # Data dir mounted.
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    check(f"{tag} data dir /var/lib/openchat/data mounted, OPENCHAT_DATA_DIR matches",
          "/var/lib/openchat/data" in mounts and env_value(c, "OPENCHAT_DATA_DIR") == "/var/lib/openchat/data")

    # PodDisruptionBudget.
    check(f"{tag} PodDisruptionBudget selects the server pods",
          any(p["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
              for p in of_kind(docs, "PodDisruptionBudget")))
    return dep, pod, c, env, secrets


def main():
    render_dir, chart_dir, readme = sys.argv[1:4]
    text = open(readme).read()
    config = text[text.index("## Configuration"):]
    config = config[:config.index("\n## ", 5)]
    readme_vars = set(re.findall(r"^\| `(OPENCHAT_[A-Z0-9_]+)`", config, re.M))
    check("README Configuration table parsed (>= 40 OPENCHAT_* variables)", len(readme_vars) >= 40, str(len(readme_vars)))

    values = yaml.safe_load(open(os.path.join(chart_dir, "values.yaml")))
    check("values.yaml has no default ticket secret, database URL, TURN password or shared secret",
          set(values["rtc"]["ticketSecret"]) == {"existingSecret", "existingSecretKey"}
          and not values["rtc"]["ticketSecret"]["existingSecret"]
          and values["database"]["url"] == "" and values["coturn"]["auth"]["password"] == ""
          and values["coturn"]["auth"]["sharedSecret"] == "" and values["secretEnv"] == {})

    # --- defaults
    docs = load(render_dir, "defaults")
    dep, pod, c, env, secrets = common("defaults", docs, chart_dir, readme_vars)
    check("[defaults] OPENCHAT_SHARDS = media.shards (2)", env_value(c, "OPENCHAT_SHARDS") == "2")
    check("[defaults] OPENCHAT_RTC_PUBLIC_IP from the node (status.hostIP)",
          env.get("OPENCHAT_RTC_PUBLIC_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.hostIP")
    check("[defaults] SQLite: no OPENCHAT_DATABASE_URL, one replica, Recreate",
          "OPENCHAT_DATABASE_URL" not in env and dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate")
    pvcs = of_kind(docs, "PersistentVolumeClaim")
    vols = {v["name"]: v for v in pod["volumes"]}
    check("[defaults] a PVC backs the data dir",
          len(pvcs) == 1 and vols["data"].get("persistentVolumeClaim", {}).get("claimName") == pvcs[0]["metadata"]["name"])
    check("[defaults] ticket secret generated into the chart's Secret",
          secret_ref(c, "OPENCHAT_RTC_TICKET_SECRET") == ("openchat-backend", "rtc-ticket-secret")
          and len(secrets.get("openchat-backend", {}).get("rtc-ticket-secret", "")) == 48)
    check("[defaults] no coturn, no TURN env, no ServiceMonitor/Ingress/HTTPRoute, no hostNetwork",
          not [d for d in docs if "coturn" in d["metadata"]["name"]]
          and not any(n.startswith("OPENCHAT_RTC_TURN") or n == "OPENCHAT_RTC_STUN_URLS" for n in env)
          and not of_kind(docs, "ServiceMonitor") and not of_kind(docs, "Ingress") and not of_kind(docs, "HTTPRoute")
          and not pod.get("hostNetwork"))
    check("[defaults] no dashboard ConfigMap", not [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")])
    check("[defaults] seccomp Localhost (io_uring profile)", pod["securityContext"]["seccompProfile"]["type"] == "Localhost")

    # --- the seed coturn example
    docs = load(render_dir, "coturn-seed")
    dep, pod, c, env, secrets = common("coturn-seed", docs, chart_dir, readme_vars)
    check("[coturn-seed] OPENCHAT_RTC_TURN_URLS = advertised TURN URLs joined by commas",
          env_value(c, "OPENCHAT_RTC_TURN_URLS") == "turn:turn.openchat.example.com:3478?transport=udp,turn:turn.openchat.example.com:3478?transport=tcp",
          env_value(c, "OPENCHAT_RTC_TURN_URLS"))
    check("[coturn-seed] OPENCHAT_RTC_STUN_URLS = advertised STUN first, then Google's five",
          env_value(c, "OPENCHAT_RTC_STUN_URLS") == ",".join(["stun:turn.openchat.example.com:3478"] + GOOGLE_STUN),
          env_value(c, "OPENCHAT_RTC_STUN_URLS"))
    u, p = secret_ref(c, "OPENCHAT_RTC_TURN_USERNAME"), secret_ref(c, "OPENCHAT_RTC_TURN_CREDENTIAL")
    check("[coturn-seed] TURN username/credential from the coturn Secret (openchat-turn / replace-me)",
          u and p and secrets.get(u[0], {}).get(u[1]) == "openchat-turn" and secrets.get(p[0], {}).get(p[1]) == "replace-me",
          f"{u} {p}")
    check("[coturn-seed] static scheme: no OPENCHAT_RTC_TURN_SECRET", "OPENCHAT_RTC_TURN_SECRET" not in env)
    check("[coturn-seed] TURN password in no ConfigMap", "replace-me" not in configmap_text(docs))
    cdep = one(docs, "Deployment", "openchat-backend-coturn")
    cc = container(cdep, "coturn")
    conf = one(docs, "ConfigMap", "openchat-backend-coturn")["data"]["turnserver.conf"]
    check("[coturn-seed] coturn Deployment: image coturn/coturn, hostNetwork, 3478 udp+tcp",
          cc["image"].startswith("coturn/coturn:") and cdep["spec"]["template"]["spec"].get("hostNetwork") is True
          and {(p["containerPort"], p["protocol"]) for p in cc["ports"]} == {(3478, "UDP"), (3478, "TCP")})
    check("[coturn-seed] turnserver.conf from the ConfigMap: external-ip, realm, lt-cred-mech",
          "external-ip=203.0.113.10" in conf.splitlines() and "realm=openchat.example.com" in conf.splitlines()
          and "lt-cred-mech" in conf.splitlines(), conf)
    check("[coturn-seed] coturn gets its user from the Secret through env",
          "--user=$(TURN_USERNAME):$(TURN_PASSWORD)" in cc["args"]
          and all(e.get("valueFrom", {}).get("secretKeyRef") for e in cc["env"]))
    csc = cc.get("securityContext", {})
    check("[coturn-seed] coturn: non-root, read-only root, drop ALL",
          cdep["spec"]["template"]["spec"]["securityContext"].get("runAsNonRoot") is True
          and csc.get("readOnlyRootFilesystem") is True and csc.get("capabilities", {}).get("drop") == ["ALL"])
    relay = {line.split("=")[0]: line.split("=")[1] for line in conf.splitlines() if line.startswith(("min-port", "max-port"))}
    check("[coturn-seed] coturn relay ports clear of the media ports",
          not (int(relay["min-port"]) <= 50001 and int(relay["max-port"]) >= 50000), str(relay))

    # --- CPU-pinned with Postgres
    docs = load(render_dir, "pinned-postgres")
    dep, pod, c, env, secrets = common("pinned-postgres", docs, chart_dir, readme_vars)
    for ctr in pod["containers"] + pod.get("initContainers", []):
        r = ctr.get("resources", {})
        req, lim = r.get("requests", {}), r.get("limits", {})
        check(f"[pinned-postgres] Guaranteed QoS in container {ctr['name']}: requests == limits (cpu, memory), integer CPU",
              req.get("cpu") is not None and req.get("memory") is not None
              and cpu_int(req["cpu"]) is not None and cpu_int(req["cpu"]) == cpu_int(lim.get("cpu"))
              and str(req["memory"]) == str(lim.get("memory")), str(r))
    cpus = cpu_int(c["resources"]["limits"]["cpu"])
    check(f"[pinned-postgres] OPENCHAT_SHARDS = CPU count ({cpus})", env_value(c, "OPENCHAT_SHARDS") == str(cpus))
    check("[pinned-postgres] hostNetwork with dnsPolicy ClusterFirstWithHostNet",
          pod.get("hostNetwork") is True and pod.get("dnsPolicy") == "ClusterFirstWithHostNet")
    check("[pinned-postgres] OPENCHAT_RTC_PUBLIC_IP from media.publicIP", env_value(c, "OPENCHAT_RTC_PUBLIC_IP") == "198.51.100.7")
    ref = secret_ref(c, "OPENCHAT_DATABASE_URL")
    check("[pinned-postgres] OPENCHAT_DATABASE_URL from the chart's Secret",
          ref and secrets.get(ref[0], {}).get(ref[1], "").startswith("postgres://"), str(ref))
    cm = configmap_text(docs)
    check("[pinned-postgres] database URL and its password in no ConfigMap",
          "postgres://" not in cm and "db-password-not-in-configmaps" not in cm)
    check("[pinned-postgres] OPENCHAT_EVIDENCE_KEY (secretEnv) from the Secret",
          secret_ref(c, "OPENCHAT_EVIDENCE_KEY") == ("openchat-backend", "OPENCHAT_EVIDENCE_KEY"))
    ref = secret_ref(c, "OPENCHAT_RTC_TURN_SECRET")
    check("[pinned-postgres] shared-secret scheme: OPENCHAT_RTC_TURN_SECRET from a Secret, no static username/credential",
          ref and secrets.get(ref[0], {}).get(ref[1]) == "shared-secret-of-at-least-16"
          and "OPENCHAT_RTC_TURN_USERNAME" not in env and "OPENCHAT_RTC_TURN_CREDENTIAL" not in env)
    cdep = one(docs, "Deployment", "openchat-backend-coturn")
    cc = container(cdep, "coturn")
    conf = one(docs, "ConfigMap", "openchat-backend-coturn")["data"]["turnserver.conf"]
    check("[pinned-postgres] coturn use-auth-secret in the ConfigMap, static-auth-secret only from the Secret",
          "use-auth-secret" in conf.splitlines() and "static-auth-secret" not in conf and "shared-secret-of" not in cm
          and "--static-auth-secret=$(TURN_SHARED_SECRET)" in cc["args"])
    check("[pinned-postgres] appendGoogleStunFallback false: STUN = advertised only",
          env_value(c, "OPENCHAT_RTC_STUN_URLS") == "stun:turn.chat.example.com:3478")
    csvc = one(docs, "Service", "openchat-backend-coturn")
    check("[pinned-postgres] coturn Service 3478 udp+tcp (no hostNetwork)",
          {(p["port"], p["protocol"]) for p in csvc["spec"]["ports"]} == {(3478, "UDP"), (3478, "TCP")}
          and not cdep["spec"]["template"]["spec"].get("hostNetwork"))
    msvc = one(docs, "Service", "openchat-backend-media")
    check("[pinned-postgres] media UDP Service, one port per shard",
          [(p["port"], p["protocol"]) for p in msvc["spec"]["ports"]] == [(50000 + i, "UDP") for i in range(cpus)])
    ing = one(docs, "Ingress")
    paths = {p["path"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]}
    check("[pinned-postgres] Ingress routes / and the WebSocket paths", {"/", "/v1/realtime", "/v1/rtc/signaling"} <= paths, str(paths))
    route = one(docs, "HTTPRoute")
    rpaths = {m["path"]["value"] for r in route["spec"]["rules"] for m in r["matches"]}
    check("[pinned-postgres] HTTPRoute routes / and the WebSocket paths", {"/", "/v1/realtime", "/v1/rtc/signaling"} <= rpaths)
    sm = one(docs, "ServiceMonitor")
    check("[pinned-postgres] ServiceMonitor scrapes /metrics on http", sm["spec"]["endpoints"][0]["path"] == "/metrics")
    dash_cm = one(docs, "ConfigMap", "openchat-backend-dashboard")
    with open(os.path.join(chart_dir, "files", "dashboards", "openchatd.json")) as f:
        shipped = json.load(f)
    check("[pinned-postgres] the dashboard ConfigMap carries the shipped JSON, labelled for the sidecar",
          json.loads(dash_cm["data"]["openchatd.json"]) == shipped
          and dash_cm["metadata"]["labels"].get("grafana_dashboard") == "1")
    check("[pinned-postgres] nodeSelector, tolerations, affinity passed through",
          pod.get("nodeSelector") == {"openchat.example.com/cpu-manager": "static"} and pod.get("tolerations")
          and pod.get("affinity", {}).get("podAntiAffinity"))
    tsc = pod.get("topologySpreadConstraints", [])
    check("[pinned-postgres] topologySpreadConstraints get the chart's labelSelector",
          tsc and tsc[0].get("labelSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "server")
    check("[pinned-postgres] 2 replicas, no PVC, RollingUpdate without surge",
          dep["spec"]["replicas"] == 2 and not of_kind(docs, "PersistentVolumeClaim")
          and dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0)

    # --- SQLite single replica, explicit STUN override, existing ticket secret
    docs = load(render_dir, "sqlite-single")
    dep, pod, c, env, secrets = common("sqlite-single", docs, chart_dir, readme_vars)
    check("[sqlite-single] explicit env.OPENCHAT_RTC_STUN_URLS overrides the injected value",
          env_value(c, "OPENCHAT_RTC_STUN_URLS") == "stun:stun.override.example:3478", env_value(c, "OPENCHAT_RTC_STUN_URLS"))
    check("[sqlite-single] TURN URLs still injected",
          env_value(c, "OPENCHAT_RTC_TURN_URLS", ) and env_value(c, "OPENCHAT_RTC_TURN_URLS").count("turn:") == 2)
    check("[sqlite-single] each variable set once", len(c["env"]) == len(env))
    check("[sqlite-single] 3 shards from UDP port 51000",
          env_value(c, "OPENCHAT_SHARDS") == "3" and [p.get("hostPort") for p in c["ports"] if p["protocol"] == "UDP"] == [51000, 51001, 51002])
    pvc = one(docs, "PersistentVolumeClaim")
    check("[sqlite-single] PVC 20Gi on storageClass fast, one replica, no database URL",
          pvc["spec"]["storageClassName"] == "fast" and pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
          and dep["spec"]["replicas"] == 1 and "OPENCHAT_DATABASE_URL" not in env)
    check("[sqlite-single] ticket secret from rtc.ticketSecret.existingSecret, none generated",
          secret_ref(c, "OPENCHAT_RTC_TICKET_SECRET") == ("openchat-ticket", "rtc-ticket-secret")
          and "rtc-ticket-secret" not in secrets.get("openchat-backend", {}))

    print(f"assertions: {passes} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
