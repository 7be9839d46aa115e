FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.lock
COPY api ./api
COPY alembic ./alembic
COPY alembic.ini ./
RUN pip install --no-cache-dir --no-deps . && useradd --system liushou
USER liushou
EXPOSE 8000
CMD ["liushou", "serve", "--host", "0.0.0.0", "--port", "8000"]
