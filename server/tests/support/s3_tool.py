"""S3 chores for the delivery tests, done with boto3 (AWS's own SDK, not evidex's
client): create buckets (with Object Lock), put, get, head and list objects.

usage: s3_tool.py ENDPOINT ACCESS_KEY SECRET_KEY COMMAND ARGS...
  create-bucket BUCKET [lock]
  put BUCKET KEY FILE
  get BUCKET KEY FILE
  head BUCKET KEY            -> JSON: Metadata, ObjectLockMode, ObjectLockRetainUntilDate, ContentLength
  list BUCKET [PREFIX]       -> JSON list of keys
"""
import json
import sys

import boto3
from botocore.config import Config

endpoint, ak, sk, cmd, *args = sys.argv[1:]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=ak,
    aws_secret_access_key=sk,
    region_name="us-east-1",
    config=Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    ),
)
if cmd == "create-bucket":
    kw = {"Bucket": args[0]}
    if len(args) > 1 and args[1] == "lock":
        kw["ObjectLockEnabledForBucket"] = True
    s3.create_bucket(**kw)
elif cmd == "put":
    with open(args[2], "rb") as f:
        s3.put_object(Bucket=args[0], Key=args[1], Body=f.read())
elif cmd == "get":
    body = s3.get_object(Bucket=args[0], Key=args[1])["Body"].read()
    with open(args[2], "wb") as f:
        f.write(body)
elif cmd == "head":
    h = s3.head_object(Bucket=args[0], Key=args[1])
    print(json.dumps({
        "Metadata": h.get("Metadata", {}),
        "ObjectLockMode": h.get("ObjectLockMode"),
        "ObjectLockRetainUntilDate": str(h.get("ObjectLockRetainUntilDate") or ""),
        "ContentLength": h.get("ContentLength"),
        "ServerSideEncryption": h.get("ServerSideEncryption"),
    }))
elif cmd == "list":
    prefix = args[1] if len(args) > 1 else ""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args[0], Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    print(json.dumps(keys))
else:
    sys.exit(f"unknown command {cmd}")
