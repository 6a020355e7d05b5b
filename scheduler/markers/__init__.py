"""The marker campaign: ``schedctl markers audit | apply | review``.

- :mod:`.expression`: pytest's ``-m`` expression, evaluated on a set of marker names
- :mod:`.collect`: the real suite at a ref, collected (only) in a tier's runner and image
- :mod:`.audit`: the distribution, what each tier selects and its predicted duration
- :mod:`.recommend`: hourly/daily/slow/demote recommendations with evidence, within budgets
- :mod:`.catalog`: the reviewed marker catalog file (``tests/schedctl-markers.toml``)
- :mod:`.report`: text, Markdown and JSON renderings (``audit.schema.json`` documents the JSON)
- :mod:`.review`: the quarterly review (drift, stale catalog entries, unowned tests)

The catalog is applied at collection time by :mod:`runners.catalog_plugin` (stdlib + pytest).
"""
