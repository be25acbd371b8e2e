FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY astra_stac ./astra_stac
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . && useradd --system --no-create-home astra
USER astra
EXPOSE 8080
CMD ["sh", "-c", "astra-stac db migrate && astra-stac serve --host 0.0.0.0 --port 8080"]
