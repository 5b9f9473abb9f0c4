#!/usr/bin/env bash
# Move the queue's pinned checkout (QUEUE_TREE, a `git worktree`) to a commit of this repo,
# keeping its results/, .venv and .queue as symlinks to this tree's. Run it between two jobs.
#   bash experiments/update_queue_tree.sh /work/qtree [commit]
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd); tree=$1; commit=${2:-HEAD}
[ -d "$tree" ] || git worktree add --detach "$tree" "$commit"
for link in results .venv .queue; do rm -rf "${tree:?}/$link"; done
git -C "$tree" checkout -q -f --detach "$(git rev-parse "$commit")"
for link in results .venv .queue; do rm -rf "${tree:?}/$link"; ln -s "$here/$link" "$tree/$link"; done
git -C "$tree" log --oneline -1
