"""Sets up moto's S3 server for the trust tests (run by dev-services.sh).

moto enforces IAM policies once its first INITIAL_NO_AUTH_ACTION_COUNT (3)
requests are spent: those create an admin, whose key makes the rest. Garage
has no Object Lock and no IAM policies; these tests need both:

  wpdr-locked    a bucket with Object Lock enabled
  wpdr-unlocked  a bucket without it (check-config must refuse it)
  writer         get/put/list, may set retention: never delete (backup, archive, sync)
  pruner         writer + delete (prune only)
  reader         get/list (restore, drill)

Prints `export NAME=VALUE` lines for the dev env file.
"""
import json
import sys

import boto3

endpoint = sys.argv[1]


def client(service, key="bootstrap", secret="bootstrap"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def allow(actions):
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": actions,
            "Resource": ["arn:aws:s3:::wpdr-*", "arn:aws:s3:::wpdr-*/*"],
        }],
    })


iam = client("iam")
iam.create_user(UserName="admin")
iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
admin = iam.create_access_key(UserName="admin")["AccessKey"]
iam = client("iam", admin["AccessKeyId"], admin["SecretAccessKey"])
s3 = client("s3", admin["AccessKeyId"], admin["SecretAccessKey"])
s3.create_bucket(Bucket="wpdr-locked", ObjectLockEnabledForBucket=True)
s3.create_bucket(Bucket="wpdr-unlocked")

# moto names HeadBucket an action of its own (AWS counts it as ListBucket).
read = ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket", "s3:GetBucketObjectLockConfiguration"]
write = read + ["s3:PutObject", "s3:PutObjectRetention", "s3:ListBucketMultipartUploads"]
prune = write + ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:ListBucketVersions",
                 "s3:AbortMultipartUpload"]
print(f"export WPDR_TEST_MOTO_ENDPOINT={endpoint}")
for user, actions in [("writer", write), ("pruner", prune), ("reader", read)]:
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=allow(actions))
    k = iam.create_access_key(UserName=user)["AccessKey"]
    print(f"export WPDR_TEST_MOTO_{user.upper()}_ID={k['AccessKeyId']}")
    print(f"export WPDR_TEST_MOTO_{user.upper()}_SECRET={k['SecretAccessKey']}")
print(f"export WPDR_TEST_MOTO_ADMIN_ID={admin['AccessKeyId']}")
print(f"export WPDR_TEST_MOTO_ADMIN_SECRET={admin['SecretAccessKey']}")
