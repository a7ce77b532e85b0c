# Sourced by scripts/test (and so by .ci/run): make sure what the test suite needs is there, installing
# and starting whatever is missing —
#   Chromium at /usr/bin/chromium (Debian's `chromium` package; VOLUBLE_E2E_CHROMIUM overrides),
#   PostgreSQL on 127.0.0.1:5432 with a `test` database the `postgres` role reaches without a password,
#   Redis on 127.0.0.1:6379.
# A service named by VOLUBLE_TEST_POSTGRES_URL / VOLUBLE_TEST_REDIS_URL is yours: it is used as it is.
# Works as root (CI) and as a user with sudo (asked only when something must be installed or started);
# without either it says what to install. Idempotent: when everything is present it only checks (<1 s).
# Debian/Ubuntu (apt-get); elsewhere, install the three yourself and this only checks.

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
CHROMIUM="${VOLUBLE_E2E_CHROMIUM:-/usr/bin/chromium}"
SERVICE_WAIT_SECONDS=60

say() { echo "scripts/test: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=(none)
fi

# as_root WHAT CMD...: run CMD as root (directly, or with sudo); without either, say what is needed.
as_root() {
    local what=$1; shift
    if [ "${SUDO[0]:-}" = none ]; then
        die "cannot $what: not root and no sudo. As root, run: $*"
    fi
    "${SUDO[@]}" "$@"
}

APT_UPDATED=0
# apt_install PACKAGE...: install Debian packages (as root), or say which ones are missing.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "please install: $* (no apt-get here)"
    [ "${SUDO[0]:-}" != none ] || die "not root and no sudo: please install them as root: apt-get install $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root "install $*" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
        APT_UPDATED=1
    fi
    as_root "install $*" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" </dev/null
}

has_systemd() { [ -d /run/systemd/system ]; }

wait_for() {
    local what=$1; shift
    local i
    for ((i = 0; i < SERVICE_WAIT_SECONDS; i++)); do
        "$@" && return 0
        sleep 1
    done
    die "$what did not become ready within ${SERVICE_WAIT_SECONDS}s"
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ---------------------------------------------------------------- Chromium
ensure_chromium() {
    [ -x "$CHROMIUM" ] && return 0
    [ "$CHROMIUM" = /usr/bin/chromium ] || die "VOLUBLE_E2E_CHROMIUM=$CHROMIUM is not an executable"
    say "$CHROMIUM is missing (the e2e tests drive it): installing Debian's chromium package"
    apt_install chromium
    [ -x "$CHROMIUM" ] || die "the chromium package did not provide $CHROMIUM"
}

# ---------------------------------------------------------------- PostgreSQL
pg_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1
    else
        tcp_open "$PG_HOST" "$PG_PORT"
    fi
}
pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -1; }
pg_test_reachable() {
    psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d test -tAc 'select 1' >/dev/null 2>&1 </dev/null
}
pg_sql() { psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d test -tAc "$1" </dev/null; }

# as the postgres OS user (peer authentication over the local socket)
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@" </dev/null)
    elif [ "${SUDO[0]:-}" != none ]; then
        (cd / && sudo -u postgres "$@" </dev/null)
    else
        die "cannot run '$*' as the postgres user: not root and no sudo"
    fi
}

pg_start() {
    if has_systemd; then
        as_root "start PostgreSQL" systemctl start postgresql
    else
        as_root "start PostgreSQL" pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main start </dev/null \
            || say "pg_ctlcluster start returned non-zero (it may be starting already)"
    fi
}

# Tests connect as postgres over TCP without a password: trust 127.0.0.1 (our rule first, so it wins).
pg_configure_trust() {
    local ver hba
    ver="$(pg_version)"
    hba="/etc/postgresql/$ver/main/pg_hba.conf"
    as_root "read $hba" test -f "$hba" || die "missing $hba"
    if ! as_root "read $hba" grep -Eq \
            '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        say "letting local TCP connections (127.0.0.1) in without a password: $hba"
        as_root "edit $hba" sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
        if pg_ready; then
            as_root "reload PostgreSQL" pg_ctlcluster --skip-systemctl-redirect "$ver" main reload </dev/null || true
            sleep 1  # a SIGHUP: give the postmaster a moment to re-read pg_hba
        fi
    fi
}

ensure_postgres() {
    if ! pg_ready; then
        if [ -z "$(pg_version)" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
            say "PostgreSQL is not installed: installing it"
            apt_install --no-install-recommends postgresql
            if [ -z "$(pg_version)" ]; then
                as_root "create a PostgreSQL cluster" \
                    pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main </dev/null
            fi
            pg_configure_trust
        fi
        if ! pg_ready; then
            say "starting PostgreSQL $(pg_version)/main"
            pg_start
            wait_for "PostgreSQL" pg_ready
        fi
    fi
    command -v psql >/dev/null 2>&1 || apt_install --no-install-recommends postgresql-client
    if ! pg_test_reachable; then
        say "database 'test' not reachable as postgres on $PG_HOST:$PG_PORT: setting it up"
        pg_configure_trust
        if [ "$(as_postgres psql -tAc "select 1 from pg_database where datname = 'test'")" != 1 ]; then
            as_postgres createdb test
        fi
        pg_test_reachable || die "cannot connect: psql -h $PG_HOST -U postgres test"
    fi
    # CI runs as root: a role of that name lets `psql -h 127.0.0.1 test` work there without -U
    if [ "$(id -u)" -eq 0 ] && [ "$(pg_sql "select count(*) from pg_roles where rolname = 'root'")" != 1 ]; then
        say "creating the PostgreSQL role root"
        pg_sql "create role root superuser login" >/dev/null
    fi
}

# ---------------------------------------------------------------- Redis
redis_ready() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null </dev/null)" = PONG ]
    else
        tcp_open "$REDIS_HOST" "$REDIS_PORT"
    fi
}

ensure_redis() {
    redis_ready && return 0
    if ! command -v redis-server >/dev/null 2>&1; then
        say "Redis is not installed: installing redis-server"
        apt_install --no-install-recommends redis-server
    fi
    if ! redis_ready && has_systemd; then
        as_root "start Redis" systemctl start redis-server || true
        sleep 1
    fi
    if ! redis_ready; then
        say "starting redis-server on $REDIS_HOST:$REDIS_PORT"
        redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" \
            --save "" --appendonly no --dir /tmp </dev/null >/dev/null
    fi
    wait_for "Redis" redis_ready
}

ensure_chromium
[ -n "${VOLUBLE_TEST_POSTGRES_URL:-}" ] || ensure_postgres
[ -n "${VOLUBLE_TEST_REDIS_URL:-}" ] || ensure_redis
export VOLUBLE_TEST_POSTGRES_URL="${VOLUBLE_TEST_POSTGRES_URL:-postgresql+asyncpg://postgres@$PG_HOST:$PG_PORT/test}"
export VOLUBLE_TEST_REDIS_URL="${VOLUBLE_TEST_REDIS_URL:-redis://$REDIS_HOST:$REDIS_PORT/0}"
say "PostgreSQL $VOLUBLE_TEST_POSTGRES_URL, Redis $VOLUBLE_TEST_REDIS_URL (and the embedded one), Chromium $CHROMIUM"
