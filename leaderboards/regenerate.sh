#!/usr/bin/env bash
# Regenerate leaderboards/synth.csv: the synthetic suite scored for the built-in editors.
#
#   leaderboards/regenerate.sh            # all built-in editors, default synth suite, seed 0
#   EDITORS="identity oracle" leaderboards/regenerate.sh
#
# Runs go to a fresh folder under runs/ (kept, so the report and the gate can use them); rows of
# leaderboards/synth.csv with the same key are replaced, others kept. CPU only, no downloads.
set -euo pipefail
cd "$(dirname "$0")/.."

MICEBENCH=${MICEBENCH:-micebench}
EDITORS=${EDITORS:-"identity oracle synth-context synth-lastturn synth-drift"}
SEED=${SEED:-0}
OUT=${OUT:-runs/leaderboard-synth-$(date -u +%Y%m%d-%H%M%S)}
BOARD=${BOARD:-leaderboards/synth.csv}

if [ -e "$OUT" ]; then
  echo "error: $OUT exists; pick another OUT=..." >&2
  exit 2
fi

runs=()
for editor in $EDITORS; do
  # exit code 1 means some turns failed: the run is still published, its coverage shows the failures
  "$MICEBENCH" run --suite synth --model "$editor" --seed "$SEED" --out "$OUT" --run-name "synth-$editor" -q \
    || [ $? -eq 1 ]
  if [ ! -f "$OUT/synth-$editor/manifest.json" ]; then
    echo "error: the run of $editor did not produce $OUT/synth-$editor (see above)" >&2
    exit 2
  fi
  runs+=("$OUT/synth-$editor")
done

"$MICEBENCH" leaderboard publish "${runs[@]}" --to "$BOARD"
"$MICEBENCH" report "${runs[@]}" -o "$OUT/report.html"
"$MICEBENCH" leaderboard show "$BOARD"
echo "runs and report: $OUT"
