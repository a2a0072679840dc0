"""moto's S3 server with IAM enforced, for tests/object_lock.rs (started by
dev-services.sh).

One fix applied in this process only: moto checks a request's signature by
re-signing the URL it received, and botocore builds that canonical query
string without URI-encoding it, so any query value with a `/` (every
ListObjectsV2 with a prefix) fails with SignatureDoesNotMatch although the
client signed it correctly (SigV4 encodes all but unreserved characters).
"""
import sys
from urllib.parse import quote, unquote

import botocore.auth
from moto.server import main


def canonical_query_string_url(self, parts):
    if not parts.query:
        return ""
    pairs = []
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


botocore.auth.SigV4Auth._canonical_query_string_url = canonical_query_string_url

if __name__ == "__main__":
    main(sys.argv[1:])
