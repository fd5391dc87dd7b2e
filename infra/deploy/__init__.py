"""Deploy a Chalice stage to AWS, tear it down, package it for a pipeline, pause its worker.

Run as ``python -m infra.deploy <command> --stage <stage>`` (``make deploy|destroy|package|
api-key|pause|resume STAGE=``). One module per job, each module's docstring its map: what
it does, what it calls, what each failure leaves behind.

    __main__.py         the command line: parses it, calls one command, prints DeployError
    lifecycle.py        deploy and destroy: the steps in order, the stack, the ops stack
    access.py           API Gateway access: the usage plan, the stage's key, clients' keys
    packaging.py        the stage as a SAM template and deployment.zip, for a pipeline
    event_stream.py     the job table stream's mapping: what Chalice's decorator cannot set
    sqs_scaling.py      the SQS mappings' maximum concurrency: each function's reservation
    pause.py            pause and resume the worker, on AWS and on the local stage
    logs.py             the functions' log groups, deleted with the stage
    state.py            Chalice's record of the deployed stage, kept in SSM
    chalice_project.py  what they all read from the Chalice project; ``chalice`` itself;
                        DeployError

Each module imports only those below it in this order: chalice_project, state, logs and
event_stream first, then access and sqs_scaling, then lifecycle, packaging and pause, then
__main__. Nothing is imported here: code outside the package imports from the module that
owns a name (``from infra.deploy.access import Throttle``).
"""
