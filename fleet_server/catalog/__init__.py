"""Model catalog: models, versions, uploads and the background conversion job that runs ``converters``.

Modules: ``names`` (what a model / version name may be), ``inputs`` (reading calibration and evaluation
arrays; shared with ``tinyfleet model convert``), ``options`` (the upload's conversion options),
``upload_checks`` (cheap checks before anything is stored), ``storage`` (artifact-store paths),
``service`` (create / submit / register / query: what routes and CLI call), ``jobs`` (claim, heartbeat,
progress, finish, requeue of stale jobs: the DB row is the job record), ``runner`` (runs one claimed
job through ``converters.pipeline.convert_model``), ``worker`` (the local worker loop), ``rq_queue``
(the same job function under RQ on Redis), ``local_process`` (a worker child process started by the
server). TensorFlow is imported only by ``runner`` inside the job, never by the API process.
"""
