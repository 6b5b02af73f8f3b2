"""Results of runs: the typed run (:mod:`.run`), the per-turn table (:mod:`.turn_table`), aggregates with
bootstrap CIs (:mod:`.aggregate`), summaries in text / Markdown / LaTeX / JSON (:mod:`.summary`), paired
comparison (:mod:`.compare`), leaderboards (:mod:`.leaderboard`), the CI gate (:mod:`.gate`), the console
screen after a run (:mod:`.quicklook`), the HTML report (:mod:`.report`) and their commands (:mod:`.cli`).

Everything here reads run directories only through :func:`micebench.results.run.open_run`, and imports
no model library. Submodules are imported on use: this package's import costs nothing.
"""
