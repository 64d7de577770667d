"""Invokes a Triggerfish tenant through boto3's Lambda client, as an AWS SDK
user (or a Cognito emulator) would, and prints what came back as JSON.

usage: lambda_client.py ENDPOINT FUNCTION EVENT_JSON

The credentials come from TRIGGERFISH_ACCESS_KEY_ID and
TRIGGERFISH_SECRET_ACCESS_KEY when set (a tenant's AWS key pair), or are
placeholders (for tenants that do not authenticate). With
TRIGGERFISH_LOG_TYPE=Tail, it asks for the invocation's log tail and prints
it, decoded, as "logResult".
"""
import base64
import json
import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, function, event = sys.argv[1], sys.argv[2], sys.argv[3]
client = boto3.client(
    "lambda",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id=os.environ.get("TRIGGERFISH_ACCESS_KEY_ID", "AKIDEXAMPLE"),
    aws_secret_access_key=os.environ.get(
        "TRIGGERFISH_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    ),
    config=Config(retries={"max_attempts": 1}),
)
extra = {}
if os.environ.get("TRIGGERFISH_LOG_TYPE"):
    extra["LogType"] = os.environ["TRIGGERFISH_LOG_TYPE"]
try:
    answer = client.invoke(FunctionName=function, Payload=event.encode(), **extra)
except ClientError as error:
    print(json.dumps({"error": error.response["Error"]["Code"]}))
    sys.exit(0)
print(json.dumps({
    "status": answer["StatusCode"],
    "functionError": answer.get("FunctionError"),
    "payload": json.loads(answer["Payload"].read()),
    "logResult": base64.b64decode(answer["LogResult"]).decode()
    if "LogResult" in answer else None,
}))
