FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /srv/lodge
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY graphql ./graphql
RUN uv sync --no-dev
EXPOSE 8000
CMD ["uv", "run", "--no-dev", "lodge", "serve", "--host", "0.0.0.0", "--port", "8000"]
