"""The run lifecycle: dispatch, spec, results, the ledger, recovery, tier kinds."""
