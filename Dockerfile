FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
# A CJK font for the Chinese text of the bulletins' charts; matplotlib keeps its font cache in /tmp.
RUN apt-get update && apt-get install -y --no-install-recommends fonts-wqy-microhei && rm -rf /var/lib/apt/lists/*
ENV MPLCONFIGDIR=/tmp/matplotlib
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.lock
COPY api ./api
COPY alembic ./alembic
COPY alembic.ini ./
RUN pip install --no-cache-dir --no-deps . && useradd --system liushou
USER liushou
EXPOSE 8000
CMD ["liushou", "serve", "--host", "0.0.0.0", "--port", "8000"]
