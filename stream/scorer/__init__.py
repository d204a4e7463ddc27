"""The scorer: stored seeds -> ranked candidates, over HTTP (service.py) and Kafka (kafka_path.py).

engine.py holds the model, cache and batched forward pass; batching.py gathers concurrent requests;
client.py is the Python client.
"""
