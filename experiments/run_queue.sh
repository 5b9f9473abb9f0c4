#!/usr/bin/env bash
# One queue of long runs on this machine: runs the first unfinished job of results/queue.txt,
# then the next, re-reading the file between jobs (so its order can change while it runs).
#
#   nohup bash experiments/run_queue.sh >> .queue/queue.log 2>&1 &
#
# results/queue.txt has one job per line, "<name> <command...>" (lines starting with # are
# skipped); commands run from the repository root with bash. Every command is resumable, so a
# job stopped half-way (session end, kill) is simply run again with the same command next time.
# A job is finished when its command exits 0 (marker .queue/<name>.done); a job that fails is
# marked .queue/<name>.failed and skipped until that file is removed. The runner exits when no
# job is left (--wait: keeps polling the file every minute instead).
#
# QUEUE_TREE=<dir> runs the jobs in another checkout (a `git worktree` pinned at a tested
# commit, whose results/ is a symlink to this one's; its directory is put first on
# PYTHONPATH), so that editing this tree never changes the code of a study half-way. To move
# it on between two jobs, write the commit into .queue/tree_commit: the runner calls
# experiments/update_queue_tree.sh before the next job.
set -uo pipefail
cd "$(dirname "$0")/.."
QUEUE=${QUEUE:-results/queue.txt}
STATE=${QUEUE_STATE:-.queue}
mkdir -p "$STATE"
exec 9> "$STATE/runner.lock"
flock -n 9 || { echo "another queue runner holds $STATE/runner.lock"; exit 1; }

next_job() {
  grep -vE '^\s*(#|$)' "$QUEUE" | while read -r name cmd; do
    [ -e "$STATE/$name.done" ] || [ -e "$STATE/$name.failed" ] || { printf '%s\t%s\n' "$name" "$cmd"; break; }
  done
}

while true; do
  job=$(next_job)
  if [ -z "$job" ]; then
    [ "${1:-}" = "--wait" ] || { echo "$(date -Is) queue empty"; exit 0; }
    sleep 60; continue
  fi
  name=${job%%$'\t'*}; cmd=${job#*$'\t'}
  if [ -n "${QUEUE_TREE:-}" ] && [ -s "$STATE/tree_commit" ]; then
    echo "$(date -Is) moving $QUEUE_TREE to $(cat "$STATE/tree_commit")"
    bash experiments/update_queue_tree.sh "$QUEUE_TREE" "$(cat "$STATE/tree_commit")" && rm "$STATE/tree_commit"
  fi
  echo "$(date -Is) start $name: $cmd"
  start=$(date +%s)
  # PYTHONPATH: the jobs import this checkout's (or QUEUE_TREE's) ddu_tf, not whatever
  # checkout the venv's editable install points at
  (cd "${QUEUE_TREE:-.}" && PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" bash -c "$cmd")
  rc=$?
  took=$(( $(date +%s) - start ))
  if [ $rc -eq 0 ]; then
    echo "$took" > "$STATE/$name.done"; echo "$(date -Is) done $name in ${took}s"
  else
    echo "rc=$rc after ${took}s" > "$STATE/$name.failed"; echo "$(date -Is) FAILED $name rc=$rc"
  fi
done
