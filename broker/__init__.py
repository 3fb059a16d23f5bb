"""RabbitMQ: where it is, how to declare the topology, and the one pika adapter."""
