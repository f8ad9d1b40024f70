"""Run it against a workspace: the one layer the CLI, the server and the public API call.

Each module is one command (``audit``, ``bias``, ``transfer``, ``size``, ``active``: select/route/simulate,
``embed``, ``ingest``, ``export``, ``info``, ``demo``): it records the run in the catalog, computes or reuses
cached features, loads rows with the one typed loader (:mod:`curato.commands.rows`), calls the pure core and
stores the command's latest document (``Workspace.write_latest``). Results are typed (:mod:`.results`).
"""
