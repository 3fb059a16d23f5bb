"""Developer and test tooling (throwaway RabbitMQ nodes, helpers); not used in production."""
