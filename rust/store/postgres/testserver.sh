#!/bin/sh
# A throwaway PostgreSQL server for fastjobs' tests (the Rust tests and tests/conftest.py).
#   testserver.sh start DIR PORT OWNER_PID [tls|durable]
#       initdb into DIR (trust auth, fsync off) unless it holds a server's data already, start
#       on 127.0.0.1:PORT with its socket in DIR; stopped when OWNER_PID exits. With tls: TLS
#       connections only (hostssl), its certificate for localhost and 127.0.0.1 signed by a
#       throwaway CA; DIR/tls holds ca.pem, other-ca.pem (a CA that signed nothing), client.pem
#       and client.key (role fastjobs_cert, cert auth); role fastjobs_scram logs in with
#       password scram-secret (SCRAM, channel binding). With durable: every commit is in the
#       WAL before it is answered (synchronous commit), so a crash of the server loses none.
#   testserver.sh stop DIR
#       a crash (immediate shutdown): no checkpoint, the next start recovers from the WAL
# Prints nothing on success. Exit 3: the server binaries are missing.
set -e
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bindir" ] && PATH="$bindir:$PATH"
command -v initdb >/dev/null && command -v pg_ctl >/dev/null || { echo "PostgreSQL server binaries (initdb, pg_ctl) not found: make deps installs Debian's postgresql" >&2; exit 3; }
# initdb refuses to run as root: then the package's postgres user runs the server.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
dir=$2
case $1 in
start)
  port=$3 owner=$4 tls=$5 commit=off
  [ "$5" = durable ] && commit=on
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  if [ ! -d "$dir/data" ]; then
    as_owner initdb -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  # fsync off: a crash of the server process keeps what it wrote (the kernel holds it); only a
  # crash of the machine would lose it.
  opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=$commit -c full_page_writes=off -c max_connections=200"
  if [ "$tls" = tls ]; then
    command -v openssl >/dev/null || { echo "openssl not found: make deps installs it" >&2; exit 3; }
    t=$dir/tls
    mkdir -p "$t"
    ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    {
      openssl req -x509 $ec -days 2 -subj "/CN=fastjobs test CA" -keyout "$t/ca.key" -out "$t/ca.pem"
      openssl req -x509 $ec -days 2 -subj "/CN=another CA" -keyout "$t/other-ca.key" -out "$t/other-ca.pem"
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >"$t/server.ext"
      openssl req $ec -subj "/CN=localhost" -keyout "$t/server.key" -out "$t/server.csr"
      openssl x509 -req -days 2 -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial -extfile "$t/server.ext" -out "$t/server.pem"
      printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' >"$t/client.ext"
      openssl req $ec -subj "/CN=fastjobs_cert" -keyout "$t/client.key" -out "$t/client.csr"
      openssl x509 -req -days 2 -in "$t/client.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial -extfile "$t/client.ext" -out "$t/client.pem"
    } >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; exit 1; }
    # The server refuses a key file others can read.
    chmod 600 "$t/server.key"
    [ "$(id -u)" = 0 ] && chown -R postgres "$t"
    cat >"$dir/data/pg_hba.conf" <<HBA
local all all trust
hostssl all fastjobs_scram 127.0.0.1/32 scram-sha-256
hostssl all fastjobs_cert 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 trust
HBA
    opts="$opts -c ssl=on -c ssl_cert_file=$t/server.pem -c ssl_key_file=$t/server.key -c ssl_ca_file=$t/ca.pem"
  fi
  as_owner pg_ctl -D "$dir/data" -l "$dir/server.log" -w -o "$opts" start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  if [ "$tls" = tls ]; then
    as_owner psql -q -h "$dir" -p "$port" -U postgres -d postgres \
      -c "CREATE ROLE fastjobs_scram LOGIN SUPERUSER PASSWORD 'scram-secret'" -c "CREATE ROLE fastjobs_cert LOGIN SUPERUSER" >/dev/null
  fi
  # Stopped when the test process is gone, however it ended: the watcher runs in a session of
  # its own, so a signal to the test's process group (a timeout) does not end it first.
  bin=$(dirname "$(command -v pg_ctl)")
  setsid sh -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$2/pg_ctl" -D "$3/data" -m immediate stop; else "$2/pg_ctl" -D "$3/data" -m immediate stop; fi
    rm -rf "$3"' watcher "$owner" "$bin" "$dir" </dev/null >/dev/null 2>&1 &
  ;;
stop)
  as_owner pg_ctl -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  ;;
*)
  echo "usage: $0 start DIR PORT OWNER_PID | stop DIR" >&2; exit 2
  ;;
esac
