#!/usr/bin/env bash
# System packages yadtq needs on a Debian/Ubuntu machine: redis-server (the task store), Java 17+
# and Maven (to fetch and run the Kafka broker; a JDK rather than only a runtime, because
# bench/kafka_alone.py runs Kafka's Java client from its source file). docker-compose is optional: it only lets the tests
# validate docker-compose.yml. Installs what is missing when it can (root + apt-get); otherwise it
# says, one sentence per package, what to install.
set -euo pipefail

required=()
command -v redis-server >/dev/null 2>&1 || required+=(redis-server)
{ command -v java && command -v javac; } >/dev/null 2>&1 || required+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || required+=(maven)
optional=()
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || optional+=(docker-compose)
command -v chromium >/dev/null 2>&1 || optional+=(chromium)
command -v openssl >/dev/null 2>&1 || optional+=(openssl)

wanted=("${required[@]}" "${optional[@]}")
[ ${#wanted[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing ${wanted[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null
  exit 0
fi
for package in "${required[@]}"; do
  echo "yadtq needs $package: install it (e.g. \`sudo apt-get install $package\`), or run the services with \`docker compose up -d\`." >&2
done
[ ${#required[@]} -eq 0 ]
