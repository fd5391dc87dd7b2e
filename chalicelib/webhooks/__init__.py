"""Webhooks: a client's endpoints, and the signed delivery of its jobs' events to them
(docs/webhooks.md).

- ``endpoints``: the endpoint record, its secrets and rotation, a delivery attempt, and the
  request that registers one;
- ``service``: the API's use cases (create, list, get, delete, rotate, deliveries), per
  client as jobs are;
- ``store``: the endpoints and their recent attempts, in the job table;
- ``delivery``: the delivery function's work: fan an event out to its client's endpoints,
  make each attempt, retry it for more than a day with one webhook-id;
- ``urls``: where a delivery may go, and the one HTTP request that makes it.

Nothing is imported here, so importing one module does not import the others (the API
never loads the delivery's HTTP code).
"""
