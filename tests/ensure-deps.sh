#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages when it is missing: a PostgreSQL server
# (the store tests run on SQLite and PostgreSQL), a MariaDB server (the SQL source and sink tests also run on
# MariaDB; tests/support/mariadb_server.py starts a private one, the system service is left stopped), openssl and
# xmlsec1 (interop tests), chromium and chromium-driver (the dashboard's browser tests, driven by selenium).
# Idempotent.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/sbin/mariadbd ] && [ -x /usr/bin/mariadb-install-db ] || need+=(mariadb-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v xmlsec1 >/dev/null 2>&1 || need+=(xmlsec1)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || need+=(fonts-wqy-zenhei)  # Chinese in the screenshots
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
id postgres >/dev/null 2>&1 || { echo "no postgres system user after install" >&2; exit 1; }
id mysql >/dev/null 2>&1 || { echo "no mysql system user after install" >&2; exit 1; }
echo "test dependencies present: $(ls -d /usr/lib/postgresql/*/bin | tail -1), $(/usr/sbin/mariadbd --version | cut -d' ' -f1-4)," \
     "$(openssl version), $(xmlsec1 --version)"
