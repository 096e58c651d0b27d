# One build stage, then a slim runtime that runs as an unprivileged user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN python -m venv /opt/mailprov && /opt/mailprov/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /srv/mailprov --create-home mailprov
COPY --from=build /opt/mailprov /opt/mailprov
COPY migrations /opt/mailprov/migrations
WORKDIR /srv/mailprov
ENV PATH=/opt/mailprov/bin:$PATH \
    MAILPROV_DATABASE_URL=sqlite:////srv/mailprov/data/mailprov.db \
    MAILPROV_MIGRATIONS_DIR=/opt/mailprov/migrations \
    PYTHONUNBUFFERED=1
RUN mkdir -p /srv/mailprov/data && chown mailprov /srv/mailprov/data
USER mailprov
EXPOSE 8000
CMD ["mailprov", "serve", "--host", "0.0.0.0", "--port", "8000"]
