"""Government-service backends the actions call: applications, bills and payments, feedback
tickets, hand-offs, ratings, SMS. Each backend is an interface with a SQL implementation."""
