-- One database per service, all on the same PostgreSQL server.
CREATE DATABASE labelstudio;
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
