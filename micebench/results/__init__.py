"""Results of finished runs: tables, leaderboards, the CI gate and the HTML report (none imports torch)."""
