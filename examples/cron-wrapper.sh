#!/bin/sh
# Wrap any crontab line in warden: the job keeps its schedule, warden
# contains it, and the result JSON lands beside its logs.
#
#   */5 * * * *  /usr/local/bin/cron-wrapper.sh cleanup  /usr/local/bin/cleanup.sh --old
#
name="$1"; shift
mkdir -p /var/log/warden-jobs
exec warden run --name "$name" --timeout 4m --memory 512Mi \
  --result "/var/log/warden-jobs/$name.json" -- "$@"
