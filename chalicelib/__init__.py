"""The job service's domain (jobs, kinds, worker) and one adapter per AWS resource.

Layout, from the outside in::

    app.py            routes and the SQS handler: parse, call one function here, shape
    service.py        submit a job / look one up (the API's use cases)
    worker.py         run one queued job from its SQS record (the worker's use case)
    requests.py       strict parsing of POST /heavy and POST /jobs bodies
    jobs.py           Job record, JobStatus, and their DynamoDB / message forms
    kinds/            the job kinds: their declaration and registry, one module per kind
    store.py          adapter: the DynamoDB job table (conditional writes)
    queue.py          adapter: the SQS job queue
    connections.py    cached boto3 clients and adapters, built on first use
    config.py         settings, read once from the environment
    errors.py         the exception tree
"""
