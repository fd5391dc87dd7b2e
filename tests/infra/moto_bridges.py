"""What moto 5.2.5 lacks for the deploy rehearsal, added to an in-process moto server.

Harness only (nothing in infra/ knows about it), pinned to the moto version it was written
against, and each piece as close to AWS's documented behaviour as the rehearsal needs:

- Lambda's GetAccountSettings: the account's concurrency, from the same quota moto's own
  PutFunctionConcurrency enforces (``MOTO_LAMBDA_CONCURRENCY_QUOTA``, 1000 when unset, AWS's
  default), minus every function's reservation;
- Lambda's Put/GetFunctionRecursionConfig: recorded per function (AWS's default: Terminate),
  so tests read back what the deploy set;
- CloudFormation's AWS::CloudWatch::Alarm, which moto's CloudFormation skips with a warning:
  created and deleted through moto's own CloudWatch backend, so DescribeAlarms sees them;
- CloudFormation's PointInTimeRecoverySpecification on AWS::DynamoDB::Table, which moto's
  CloudFormation ignores: applied through moto's own UpdateContinuousBackups on creation;
  and its SSESpecification, whose ``SSEEnabled`` moto's DescribeTable does not read (it
  reads the API's ``Enabled``): given in the API's form;
- AWS's managed IAM policies, which exist in every account and moto loads only when asked
  (the deploy attaches AmazonAPIGatewayPushToCloudWatchLogs);
- Lambda's UpdateFunctionConfiguration ``KMSKeyArn``, which moto ignores (it keeps the key
  given at creation): recorded, "" meaning Lambda's own key again, as AWS does;
- CloudFormation's KmsKeyId on AWS::Logs::LogGroup, which moto's CloudFormation drops (its
  CreateLogGroup reads the API's ``kmsKeyId``): passed on, so DescribeLogGroups shows it;
- API Gateway's CreateDeployment ``tracingEnabled``, which moto ignores (it creates the
  stage without it): applied to the stage the deployment creates or updates, as API
  Gateway does ("CreateDeployment": tracingEnabled "specifies whether active tracing with
  X-Ray is enabled for the Stage"); `chalice deploy` turns tracing on this way.
"""

from __future__ import annotations

import json
import re
from typing import Any

import moto
import pytest
from moto.apigateway.responses import APIGatewayResponse
from moto.awslambda import urls as lambda_urls
from moto.awslambda.models import LambdaFunction, lambda_backends
from moto.cloudformation import parsing
from moto.cloudwatch.models import (
    Dimension,
    Metric,
    MetricDataQuery,
    MetricStat,
    cloudwatch_backends,
)
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.common_models import CloudFormationModel
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.table import Table
from moto.iam.models import iam_backends
from moto.logs.models import LogGroup

MOTO_VERSION = "5.2.5"
DEFAULT_CONCURRENCY_QUOTA = 1000
QUOTA_ENV = "MOTO_LAMBDA_CONCURRENCY_QUOTA"  # moto's own setting (awslambda/models.py)

# The function name -> RecursiveLoop values PutFunctionRecursionConfig recorded.
recursion_configs: dict[str, str] = {}


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add the pieces to moto before an in-process server starts; undone with ``monkeypatch``."""
    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"tests/infra/moto_bridges.py is for moto {MOTO_VERSION}, not {moto.__version__}"
        )
    recursion_configs.clear()
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    iam_backends.clear()  # made again on first use, reading the setting (earlier tests' go)
    paths = {
        r"{0}/(?P<api_version>[^/]+)/account-settings/?$": account_settings,
        r"{0}/(?P<api_version>[^/]+)/functions/(?P<function_name>[\w_:%-]+)/recursion-config/?$": (
            recursion_config
        ),
    }
    for path, handler in paths.items():
        monkeypatch.setitem(lambda_urls.url_paths, path, handler)
    original_create = Table.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_table(
        cls: type[Table], name: str, json_: Any, account: str, region: str, **kw: Any
    ) -> Table:
        sse = json_["Properties"].get("SSESpecification")
        if sse is not None:
            enabled = str(sse.get("SSEEnabled")).lower() == "true"
            api_form = {"Enabled": enabled, **{k: v for k, v in sse.items() if k != "SSEEnabled"}}
            json_ = {**json_, "Properties": {**json_["Properties"], "SSESpecification": api_form}}
        table = original_create(cls, name, json_, account, region, **kw)
        spec = json_["Properties"].get("PointInTimeRecoverySpecification") or {}
        if str(spec.get("PointInTimeRecoveryEnabled")).lower() == "true":
            dynamodb_backends[account][region].update_continuous_backups(
                table.name, {"PointInTimeRecoveryEnabled": True}
            )
        return table

    monkeypatch.setattr(Table, "create_from_cloudformation_json", classmethod(create_table))
    original_deployment = APIGatewayResponse.create_deployment

    def create_deployment(self: APIGatewayResponse) -> Any:
        answer = original_deployment(self)
        tracing = self._get_param("tracingEnabled")
        if tracing is not None:
            function_id = self.path.replace("/restapis/", "", 1).split("/")[0]
            stage = self.backend.get_stage(function_id, self._get_param("stageName"))
            stage.tracing_enabled = bool(tracing)
        return answer

    monkeypatch.setattr(APIGatewayResponse, "create_deployment", create_deployment)
    original_update = LambdaFunction.update_configuration

    def update_configuration(self: LambdaFunction, updates: dict[str, Any]) -> dict[str, Any]:
        if "KMSKeyArn" in updates:
            self.kms_key_arn = updates["KMSKeyArn"] or None
        return original_update(self, updates)

    monkeypatch.setattr(LambdaFunction, "update_configuration", update_configuration)
    original_group = LogGroup.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_log_group(
        cls: type[LogGroup], name: str, json_: Any, account: str, region: str, **kw: Any
    ) -> LogGroup:
        properties = dict(json_["Properties"])
        if "KmsKeyId" in properties:
            properties["kmsKeyId"] = properties.pop("KmsKeyId")
        return original_group(cls, name, {**json_, "Properties": properties}, account, region, **kw)

    monkeypatch.setattr(LogGroup, "create_from_cloudformation_json", classmethod(create_log_group))
    original_map = parsing.get_model_map()
    monkeypatch.setattr(
        parsing,
        "get_model_map",
        lambda: {**original_map, AlarmModel.cloudformation_type(): AlarmModel},
    )
    original_names = parsing.get_name_type_map()
    monkeypatch.setattr(
        parsing,
        "get_name_type_map",
        lambda: {**original_names, AlarmModel.cloudformation_type(): "AlarmName"},
    )


def _region(headers: dict[str, str]) -> str:
    """The region a SigV4 request was signed for (Credential=key/date/REGION/service/...)."""
    match = re.search(r"Credential=[^/]+/[^/]+/([^/]+)/", headers.get("Authorization", ""))
    return match.group(1) if match else "us-east-1"


def account_settings(
    request: Any, url: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], str]:
    import os

    backend = lambda_backends[DEFAULT_ACCOUNT_ID][_region(headers)]
    quota = int(os.environ.get(QUOTA_ENV, DEFAULT_CONCURRENCY_QUOTA))
    functions = backend.list_functions()
    reserved = sum(int(f.reserved_concurrency or 0) for f in functions)
    body = {
        "AccountLimit": {
            "TotalCodeSize": 80530636800,
            "CodeSizeUnzipped": 262144000,
            "CodeSizeZipped": 52428800,
            "ConcurrentExecutions": quota,
            "UnreservedConcurrentExecutions": quota - reserved,
        },
        "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": len(functions)},
    }
    return 200, {"Content-Type": "application/json"}, json.dumps(body)


def recursion_config(
    request: Any, url: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], str]:
    name = url.split("/functions/", 1)[1].split("/recursion-config", 1)[0].split(":")[-1]
    backend = lambda_backends[DEFAULT_ACCOUNT_ID][_region(headers)]
    if not any(f.function_name == name for f in backend.list_functions()):
        error = {"Type": "User", "Message": f"Function not found: {name}"}
        return 404, {"x-amzn-ErrorType": "ResourceNotFoundException"}, json.dumps(error)
    if request.method == "PUT":
        value = json.loads(request.data or b"{}")["RecursiveLoop"]
        if value not in ("Allow", "Terminate"):
            error = {"Type": "User", "Message": f"RecursiveLoop {value!r}"}
            return 400, {"x-amzn-ErrorType": "ValidationException"}, json.dumps(error)
        recursion_configs[name] = value
    body = {"RecursiveLoop": recursion_configs.get(name, "Terminate")}
    return 200, {"Content-Type": "application/json"}, json.dumps(body)


class AlarmModel(CloudFormationModel):
    """AWS::CloudWatch::Alarm for moto's CloudFormation: the alarm lives in moto's CloudWatch."""

    def __init__(self, name: str) -> None:
        self.name = name

    @staticmethod
    def cloudformation_name_type() -> str:
        return "AlarmName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Alarm"

    @property
    def physical_resource_id(self) -> str:
        return self.name  # Ref of an alarm is its name

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[override]
        cls,
        resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> AlarmModel:
        p = cloudformation_json["Properties"]
        name = p.get("AlarmName") or resource_name
        cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=name,
            namespace=p.get("Namespace"),
            metric_name=p.get("MetricName"),
            comparison_operator=p["ComparisonOperator"],
            evaluation_periods=int(p["EvaluationPeriods"]),
            period=int(p.get("Period", 60)),
            threshold=float(p["Threshold"]),
            statistic=p.get("Statistic"),
            description=p.get("AlarmDescription", ""),
            dimensions=list(p.get("Dimensions", [])),
            alarm_actions=list(p.get("AlarmActions", [])),
            ok_actions=list(p.get("OKActions", [])),
            metric_data_queries=[_query(q) for q in p.get("Metrics", [])] or None,
            treat_missing_data=p.get("TreatMissingData"),
        )
        return cls(name)

    @classmethod
    def update_from_cloudformation_json(  # type: ignore[override]
        cls,
        original_resource: AlarmModel,
        new_resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
    ) -> AlarmModel:
        original_resource.delete(account_id, region_name)
        return cls.create_from_cloudformation_json(
            new_resource_name, cloudformation_json, account_id, region_name
        )

    def delete(self, account_id: str, region_name: str) -> None:
        cloudwatch_backends[account_id][region_name].delete_alarms([self.name])


def _query(q: dict[str, Any]) -> MetricDataQuery:
    stat = q.get("MetricStat")
    metric_stat = None
    if stat:
        metric = stat["Metric"]
        dimensions = [Dimension(d["Name"], d["Value"]) for d in metric.get("Dimensions", [])]
        metric_stat = MetricStat(
            Metric(metric["MetricName"], metric["Namespace"], dimensions),
            str(stat["Period"]),
            stat["Stat"],
            stat.get("Unit"),
        )
    return MetricDataQuery(
        query_id=q["Id"],
        label=q.get("Label", ""),
        period=q.get("Period"),
        return_data=q.get("ReturnData", True),
        expression=q.get("Expression"),
        metric_stat=metric_stat,
    )
