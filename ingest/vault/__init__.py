"""The PII vault's operations that go through the recovery service: officers' requests
(requests.py), the reason rule (reasons.py), the service itself (service.py) and its metrics
(service_metrics.py)."""
