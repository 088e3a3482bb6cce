#!/usr/bin/env bash
# Builds the openchatd image of ../../Dockerfile without Docker and without pulling a base image:
# a Debian root from mmdebstrap, assembled and committed with buildah, checked with skopeo, and
# run once against PostgreSQL. See README.md beside this file.
#
#   sudo BUILD_VERSION=main scripts/image/build.sh
#
# Environment (all optional):
#   BUILD_COMMIT        labels' revision; default `git rev-parse --verify HEAD` (required: the
#                       script fails without either, as the Dockerfile fails without the build arg)
#   BUILD_VERSION       image tag and version label (default dev)
#   BUILD_TIME          created label, UTC RFC 3339 (default now)
#   OPENCHATD_BIN       the openchatd binary to put in (default <repo>/target/release/openchatd)
#   OPENCHAT_IMAGE_WORK work dir: rootfs cache, OCI archive, logs (default /tmp/openchat-image)
#   OPENCHAT_IMAGE_NAME image name in containers-storage (default localhost/openchat-backend)
#   OPENCHAT_IMAGE_SOURCE  source label (default: the git remote `origin` as https, else none)
#   OPENCHAT_IMAGE_REFRESH=1  rebuild the cached Debian root
#   OPENCHAT_IMAGE_SKIP_RUN=1 build and inspect only, no run against PostgreSQL
#   OPENCHAT_IMAGE_SECCOMP  seccomp profile for the run (default: the Helm chart's io_uring
#                       profile; `unconfined` for none)
#   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR  apt mirrors for mmdebstrap
#   PGHOST, PGPORT, PGUSER  PostgreSQL for the run (default 127.0.0.1, 5432, postgres; trust auth)
set -euo pipefail

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (buildah and mmdebstrap --mode=root need it)"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
started=$SECONDS

# --- 1. build metadata -------------------------------------------------------------------------
if [[ -z ${BUILD_COMMIT:-} ]]; then
  BUILD_COMMIT="$(git -C "$repo_root" rev-parse --verify HEAD 2>/dev/null || true)"
fi
[[ -n $BUILD_COMMIT ]] ||
  die "BUILD_COMMIT is required: BUILD_COMMIT=\$(git rev-parse --verify HEAD) $0 (or run it in a git checkout)"
BUILD_VERSION="${BUILD_VERSION:-dev}"
BUILD_TIME="${BUILD_TIME:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}"
# Same rule as .github/workflows/image.yml: the version is the image tag.
[[ $BUILD_VERSION =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] ||
  die "BUILD_VERSION '$BUILD_VERSION' cannot be an image tag (letters, digits, '_', '.', '-'; at most 128)"

work="${OPENCHAT_IMAGE_WORK:-/tmp/openchat-image}"
bin="${OPENCHATD_BIN:-$repo_root/target/release/openchatd}"
image_name="${OPENCHAT_IMAGE_NAME:-localhost/openchat-backend}"
image_ref="$image_name:$BUILD_VERSION"
release=bookworm # debian:bookworm-slim
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
archive="$work/openchat-backend-$BUILD_VERSION.oci.tar"

source_url="${OPENCHAT_IMAGE_SOURCE:-}"
if [[ -z $source_url ]]; then
  source_url="$(git -C "$repo_root" remote get-url origin 2>/dev/null || true)"
  # git@github.com:owner/repo.git -> https://github.com/owner/repo
  if [[ $source_url =~ ^git@([^:]+):(.+)$ ]]; then
    source_url="https://${BASH_REMATCH[1]}/${BASH_REMATCH[2]}"
  fi
  source_url="${source_url%.git}"
fi

[[ -x $bin ]] || die "no executable openchatd at $bin (build it with cargo, or set OPENCHATD_BIN)"
mkdir -p "$work"

log "image $image_ref: commit $BUILD_COMMIT, version $BUILD_VERSION, time $BUILD_TIME"
log "binary $bin (its own embedded commit is the one its cargo build saw, not BUILD_COMMIT)"

# --- 2. tools ----------------------------------------------------------------------------------
missing=()
for pair in buildah:buildah mmdebstrap:mmdebstrap skopeo:skopeo jq:jq curl:curl \
  psql:postgresql-client pg_isready:postgresql-client objdump:binutils ss:iproute2 pgrep:procps; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- glibc: the binary is built on the host, it must not need a newer glibc than the image's ----
glibc_need="$(objdump -T "$bin" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1 || true)"

# --- 3. Debian root (cached per release and recipe) --------------------------------------------
# minbase + ca-certificates, with the path excludes of debuerreotype's "slim" variant (what
# debian:bookworm-slim is made with), apt sources like the image's: main, -updates, -security.
mm_opts=(
  --mode=root --variant=minbase --include=ca-certificates --format=tar
  # merged /usr as debootstrap (and so debuerreotype) sets it up, with usr-is-merged; without it
  # apt meets init-system-helpers' "usrmerge | usr-is-merged" with usrmerge, and that pulls perl
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/groff/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/linda/*'
  --dpkgopt='path-exclude=/usr/share/lintian/overrides/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/man/*'
)
mm_sources=(
  "deb $mirror $release main"
  "deb $mirror $release-updates main"
  "deb $security_mirror $release-security main"
)
recipe_key="$(printf '%s\n' "${mm_opts[@]}" "${mm_sources[@]}" | sha256sum | cut -c1-12)"
rootfs="$work/rootfs-$release-$recipe_key.tar"
if [[ ! -s $rootfs || -n ${OPENCHAT_IMAGE_REFRESH:-} ]]; then
  log "mmdebstrap $release (minbase + ca-certificates) -> $rootfs"
  rm -f "$rootfs.tmp" "$rootfs.packages.tmp"
  # shellcheck disable=SC2016 # $1 is the hook's argument, expanded by mmdebstrap's shell
  mmdebstrap --quiet "${mm_opts[@]}" \
    --customize-hook='chroot "$1" dpkg-query -W -f="\${Package}=\${Version}\n" >"'"$rootfs.packages.tmp"'"' \
    "$release" "$rootfs.tmp" "${mm_sources[@]}" </dev/null
  mv "$rootfs.packages.tmp" "$rootfs.packages"
  mv "$rootfs.tmp" "$rootfs"
else
  log "cached Debian root $rootfs ($(date -u -r "$rootfs" +%Y-%m-%dT%H:%M:%SZ); OPENCHAT_IMAGE_REFRESH=1 to rebuild)"
fi
image_glibc="$(sed -n 's/^libc6=\(.*\)$/\1/p' "$rootfs.packages" || true)"
if [[ -n $glibc_need && -n $image_glibc ]]; then
  dpkg --compare-versions "${image_glibc%%-*}" ge "$glibc_need" ||
    die "$bin needs glibc $glibc_need, the image has $image_glibc: build the binary on $release or older"
  log "glibc: binary needs >= $glibc_need, image has $image_glibc, host has $(ldd --version | head -1 | awk '{print $NF}')"
fi

# --- cleanup of everything this run creates ----------------------------------------------------
build_ctr="" run_ctr="" db="" oc_pid="" run_pid=""
cleanup() {
  local rc=$?
  if [[ -n $oc_pid ]] && kill -0 "$oc_pid" 2>/dev/null; then kill -KILL "$oc_pid" 2>/dev/null || true; fi
  if [[ -n $run_pid ]]; then wait "$run_pid" 2>/dev/null || true; fi
  [[ -z $run_ctr ]] || buildah rm "$run_ctr" >/dev/null 2>&1 || true
  [[ -z $build_ctr ]] || buildah rm "$build_ctr" >/dev/null 2>&1 || true
  if [[ -n $db ]]; then
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" ||
      printf 'warning: could not drop database %s\n' "$db" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT

# --- 3. assemble the image ---------------------------------------------------------------------
log "buildah from scratch"
build_ctr="$(buildah from --name "openchat-image-build-$$" scratch)"
buildah add --quiet "$build_ctr" "$rootfs" / >/dev/null # a local tarball is extracted
# The Dockerfile's RUN, less apt-get (ca-certificates is already in the root).
buildah run --isolation chroot "$build_ctr" -- sh -euc '
  groupadd --system --gid 10001 openchat
  useradd --system --uid 10001 --gid openchat --home-dir /var/lib/openchat --create-home openchat
  mkdir -p /var/lib/openchat/data
  chown -R openchat:openchat /var/lib/openchat'
buildah copy --quiet --chmod 0755 "$build_ctr" "$bin" /usr/local/bin/openchatd >/dev/null
# mmdebstrap copies the host's /etc/resolv.conf and /etc/hostname into the root, and buildah run
# leaves an empty /etc/hosts where it bind-mounted its own: a runtime provides all three (the
# Docker Hub image has none of them), so none is kept.
mnt="$(buildah mount "$build_ctr")"
rm -f "$mnt/etc/resolv.conf" "$mnt/etc/hostname" "$mnt/etc/hosts"
buildah umount "$build_ctr" >/dev/null

config=(
  --user 10001:10001
  --workingdir /var/lib/openchat
  # debian:bookworm-slim's own ENV (a scratch image has none)
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  --env OPENCHAT_HTTP_ADDR=:8080
  --env OPENCHAT_DATA_DIR=/var/lib/openchat/data
  --env OPENCHAT_RTC_UDP_PORT=50000
  --volume /var/lib/openchat/data
  --port 8080/tcp
  --entrypoint '["/usr/local/bin/openchatd"]'
  --label "org.opencontainers.image.revision=$BUILD_COMMIT"
  --label "org.opencontainers.image.version=$BUILD_VERSION"
  --label "org.opencontainers.image.created=$BUILD_TIME"
  --label "org.opencontainers.image.licenses=GPL-2.0-only"
  --created-by "scripts/image/build.sh (mmdebstrap $release minbase + ca-certificates, buildah)"
)
# Docker expands `EXPOSE 50000-50063/udp` to one entry per port; so does this.
for port in $(seq 50000 50063); do config+=(--port "$port/udp"); done
if [[ -n $source_url ]]; then
  config+=(--label "org.opencontainers.image.source=$source_url")
else
  log "warning: no OPENCHAT_IMAGE_SOURCE and no git remote origin: no org.opencontainers.image.source label"
fi
buildah config "${config[@]}" "$build_ctr"

old_id="$(buildah images --quiet --no-trunc "$image_ref" 2>/dev/null || true)"
log "commit -> containers-storage:$image_ref"
image_id="$(buildah commit --quiet --format oci --identity-label=false --rm "$build_ctr" "$image_ref")"
build_ctr=""
if [[ -n $old_id && $old_id != "$image_id" && $old_id != "sha256:$image_id" ]]; then
  buildah rmi "$old_id" >/dev/null 2>&1 || true # the previous build of this tag, now untagged
fi
log "push -> oci-archive:$archive"
rm -f "$archive"
buildah push --quiet "$image_ref" "oci-archive:$archive:$image_ref" >/dev/null

# --- 4. inspect --------------------------------------------------------------------------------
inspect="$(skopeo inspect "oci-archive:$archive")"
cfg="$(skopeo inspect --config "oci-archive:$archive")"
printf '%s\n' "$inspect" >"$work/inspect.json"
printf '%s\n' "$cfg" >"$work/inspect-config.json"
digest="$(jq -r .Digest <<<"$inspect")"

failures=()
check() { # name expected actual
  if [[ $2 == "$3" ]]; then printf '  ok   %-28s %s\n' "$1" "$3"
  else printf '  FAIL %-28s expected %s, got %s\n' "$1" "$2" "$3"; failures+=("$1"); fi
}
log "skopeo inspect oci-archive:$archive"
check User 10001:10001 "$(jq -r '.config.User' <<<"$cfg")"
check Entrypoint '["/usr/local/bin/openchatd"]' "$(jq -c '.config.Entrypoint' <<<"$cfg")"
check Cmd null "$(jq -c '.config.Cmd' <<<"$cfg")"
check WorkingDir /var/lib/openchat "$(jq -r '.config.WorkingDir' <<<"$cfg")"
for kv in OPENCHAT_HTTP_ADDR=:8080 OPENCHAT_DATA_DIR=/var/lib/openchat/data OPENCHAT_RTC_UDP_PORT=50000; do
  check "Env ${kv%%=*}" "$kv" "$(jq -r --arg k "${kv%%=*}=" '.config.Env[] | select(startswith($k))' <<<"$cfg")"
done
check Volumes '["/var/lib/openchat/data"]' "$(jq -c '.config.Volumes | keys' <<<"$cfg")"
check "ExposedPorts 8080/tcp" yes "$(jq -r '.config.ExposedPorts | has("8080/tcp") | if . then "yes" else "no" end' <<<"$cfg")"
udp="$(jq -r '[.config.ExposedPorts | keys[] | select(endswith("/udp"))] | sort | "\(length) \(first) \(last)"' <<<"$cfg")"
check "ExposedPorts udp" "64 50000/udp 50063/udp" "$udp"
check "label revision" "$BUILD_COMMIT" "$(jq -r '.Labels["org.opencontainers.image.revision"]' <<<"$inspect")"
check "label version" "$BUILD_VERSION" "$(jq -r '.Labels["org.opencontainers.image.version"]' <<<"$inspect")"
check "label created" "$BUILD_TIME" "$(jq -r '.Labels["org.opencontainers.image.created"]' <<<"$inspect")"
check "label licenses" GPL-2.0-only "$(jq -r '.Labels["org.opencontainers.image.licenses"]' <<<"$inspect")"
[[ -z $source_url ]] ||
  check "label source" "$source_url" "$(jq -r '.Labels["org.opencontainers.image.source"]' <<<"$inspect")"
check "Os/Architecture" "linux/$(dpkg --print-architecture)" "$(jq -r '"\(.Os)/\(.Architecture)"' <<<"$inspect")"
printf '  layers %s, digest %s, image id sha256:%s\n' \
  "$(jq '.Layers | length' <<<"$inspect")" "$digest" "${image_id#sha256:}"
((${#failures[@]} == 0)) || die "the image does not match the Dockerfile: ${failures[*]} (see $work/inspect*.json)"

# --- 5. run it once ----------------------------------------------------------------------------
if [[ -n ${OPENCHAT_IMAGE_SKIP_RUN:-} ]]; then
  log "OPENCHAT_IMAGE_SKIP_RUN set: not running the image"
else
  export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
  if ! pg_isready -q -h "$PGHOST" -p "$PGPORT"; then
    log "starting PostgreSQL"
    # shellcheck disable=SC2012 # cluster versions are plain numbers
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    for _ in $(seq 30); do pg_isready -q -h "$PGHOST" -p "$PGPORT" && break; sleep 1; done
    pg_isready -h "$PGHOST" -p "$PGPORT" || die "PostgreSQL is not ready on $PGHOST:$PGPORT"
  fi
  db="openchat_image_$$_$(date +%s)"
  psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE \"$db\""

  port=""
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    if [[ -z $(ss -Htln "sport = :$p") ]]; then port=$p; break; fi
  done
  [[ -n $port ]] || die "no free TCP port found"
  secret="$(head -c 36 /dev/urandom | base64 | tr '+/' '-_')" # 48 characters

  # io_uring (glommio) may need locked memory: raise RLIMIT_MEMLOCK as far as this machine lets
  # root (without CAP_SYS_RESOURCE, as in some sandboxes, only up to the current hard limit).
  if (ulimit -l unlimited) 2>/dev/null; then memlock=unlimited memlock_rl=-1:-1
  else memlock="$(ulimit -Hl)" memlock_rl="$(($(ulimit -Hl) * 1024)):$(($(ulimit -Hl) * 1024))"
    log "note: cannot raise RLIMIT_MEMLOCK past its hard limit ($memlock KiB) here"
  fi
  # The default seccomp profile (containers-common's, as Docker's) blocks io_uring: use the
  # chart's profile, the default-deny allowlist plus the three io_uring calls.
  seccomp="${OPENCHAT_IMAGE_SECCOMP:-$repo_root/charts/openchat-backend/files/seccomp/openchatd-io-uring.json}"
  [[ $seccomp == unconfined || -r $seccomp ]] || die "no seccomp profile $seccomp (OPENCHAT_IMAGE_SECCOMP)"
  run_ctr="$(buildah from --pull=never --name "openchat-image-run-$$" \
    --ulimit "memlock=$memlock_rl" --security-opt "seccomp=$seccomp" "$image_ref")"
  run_log="$work/run.log"
  log "buildah run --isolation chroot --user 10001:10001 $run_ctr -- /usr/local/bin/openchatd (log $run_log)"
  (
    ulimit -l "$memlock"
    exec buildah run --isolation chroot --user 10001:10001 \
      --env "OPENCHAT_DATABASE_URL=postgres://$PGUSER@$PGHOST:$PGPORT/$db" \
      --env "OPENCHAT_HTTP_ADDR=127.0.0.1:$port" \
      --env OPENCHAT_RTC_UDP_PORT=0 \
      --env OPENCHAT_SHARDS=1 \
      --env "OPENCHAT_RTC_TICKET_SECRET=$secret" \
      "$run_ctr" -- /usr/local/bin/openchatd
  ) >"$run_log" 2>&1 </dev/null &
  run_pid=$!

  descendants() { local c; for c in $(pgrep -P "$1" || true); do echo "$c"; descendants "$c"; done; }
  ready="" body=""
  deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    if [[ -z $oc_pid ]]; then
      for c in $(descendants "$run_pid"); do
        [[ $(cat "/proc/$c/comm" 2>/dev/null) == openchatd ]] && { oc_pid=$c; break; }
      done
    fi
    kill -0 "$run_pid" 2>/dev/null || { cat "$run_log" >&2; die "openchatd exited before it was ready"; }
    code="$(curl -s -o "$work/readyz.json" -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/readyz" || true)"
    body="$(cat "$work/readyz.json" 2>/dev/null || true)"
    if [[ $code == 200 && $body == *'"storage":"postgres"'* ]]; then ready=1; break; fi
    sleep 0.5
  done
  [[ -n $ready ]] || { tail -n 40 "$run_log" >&2; die "no 200 with \"storage\":\"postgres\" from /readyz within 30 s (last: ${code:-none} $body)"; }
  log "readyz: $body"
  [[ -n $oc_pid ]] || die "could not find the openchatd process under buildah run (pid $run_pid)"
  printf '  openchatd pid %s runs as uid %s, user %s\n' "$oc_pid" \
    "$(awk '/^Uid:/{print $2}' "/proc/$oc_pid/status")" "$(ps -o user= -p "$oc_pid")"
  embedded="$(grep -o -m1 -E '[0-9a-f]{40}' "$run_log" || true)"
  if [[ -n $embedded && $embedded != "$BUILD_COMMIT" ]]; then
    log "note: the binary reports commit $embedded (from its cargo build), the labels say $BUILD_COMMIT"
  fi

  # Stop: SIGTERM, within OPENCHAT_SHUTDOWN_TIMEOUT_MS (10 s by default) plus a margin.
  log "SIGTERM to openchatd (pid $oc_pid)"
  kill -TERM "$oc_pid"
  stop_start=$SECONDS
  while kill -0 "$oc_pid" 2>/dev/null && ((SECONDS - stop_start < 15)); do sleep 0.2; done
  if kill -0 "$oc_pid" 2>/dev/null; then
    tail -n 20 "$run_log" >&2
    die "openchatd did not exit within 15 s of SIGTERM"
  fi
  rc=0; wait "$run_pid" || rc=$?
  run_pid="" oc_pid=""
  log "openchatd exited after $((SECONDS - stop_start)) s, buildah run status $rc"
  ((rc == 0)) || { tail -n 20 "$run_log" >&2; die "openchatd exited with status $rc after SIGTERM"; }
  buildah rm "$run_ctr" >/dev/null; run_ctr=""
  psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE \"$db\" WITH (FORCE)"; db=""
fi

log "done in $((SECONDS - started)) s; OCI archive $archive"
echo "image ok: $image_ref $digest"
