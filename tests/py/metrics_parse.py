"""Fetches a /metrics page and parses it with prometheus_client's text
parser (a real Prometheus parser); prints one metric family name per line.
Fails if the page does not parse."""
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

with urllib.request.urlopen(sys.argv[1], timeout=30) as r:
    assert r.headers["Content-Type"].startswith("text/plain"), r.headers["Content-Type"]
    text = r.read().decode()
names = set()
for family in text_string_to_metric_families(text):
    assert family.samples or family.type != "counter", family
    names.add(family.name)
    # Counters are exposed as NAME_total; the parser strips the suffix.
    if family.type == "counter":
        names.add(family.name + "_total")
print("\n".join(sorted(names)))
