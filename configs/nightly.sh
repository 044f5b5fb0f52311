#!/bin/sh
# Nightly wrapper for cron: run one sweep, and mail on-call on ANY non-zero exit
# (1: could not go on, 2: bad config, 3: some combinations failed / in doubt / running).
#
#   crontab -e, then one line (cron runs it with /bin/sh, a minimal PATH and no login env):
#   15 2 * * * /srv/sweeps/configs/nightly.sh configs/regions.toml data-oncall@example.com
#
# The token: cron does not read your shell profile, so it comes from a file only this user can
# read (chmod 600), holding one line `export DATAPREP_TOKEN=...`. Alternatively set
# api.token_file in the sweep file and leave SWEEPER_ENV_FILE absent.
set -u
config="${1:?usage: nightly.sh CONFIG [MAILTO]}"
mailto="${2:-data-oncall@example.com}"
cd "$(dirname "$0")/.." || exit 1                  # the project root: .venv, configs/, results/
env_file="${SWEEPER_ENV_FILE:-$HOME/.config/sweeper/env}"
[ -r "$env_file" ] && . "$env_file"
. .venv/bin/activate || exit 1

name="$(basename "$config" .toml)"
day="$(date -u +%F)"
mkdir -p results/logs
log="results/logs/$name-$day.log"
sweeper run "$config" --quiet --json > "results/logs/$name-$day.json" 2>> "$log"
code=$?
if [ "$code" -ne 0 ]; then
    {
        echo "sweeper run $config exited $code on $(hostname) (see $PWD/$log)"
        echo
        tail -n 50 "$log"
        echo
        sweeper report "$config" --format markdown 2>&1
    } | mail -s "sweeper $name: exit $code" "$mailto"
fi
exit "$code"
