-- deploy/compose.yml: the official PostgreSQL image runs this once, when it creates its data
-- directory. POSTGRES_DB made the service database (heze); Rasa's tracker store gets its own.
CREATE DATABASE rasa OWNER heze;
