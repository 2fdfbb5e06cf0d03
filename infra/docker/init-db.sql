-- Creates the two databases the stack needs (run once, on an empty data dir,
-- by the postgres image's /docker-entrypoint-initdb.d hook).
-- Development credentials: change them for anything shared.
CREATE USER mlflow WITH PASSWORD 'mlflow';
CREATE DATABASE mlflow OWNER mlflow;
CREATE USER optuna WITH PASSWORD 'optuna';
CREATE DATABASE optuna OWNER optuna;
