# One image per worker: docker build --build-arg CMD=issuer|mailer|redeemer|linkpipe .
# Every image also carries /linkpipe (the CLI: `linkpipe probe` is the
# healthcheck, `linkpipe setup` creates the streams). `--target ses` builds
# the SES v2 emulator for docker-compose.yml from testdeps/ (no download at
# container start).
FROM golang:1.26 AS build
ARG CMD=linkpipe
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/app ./cmd/${CMD} \
 && CGO_ENABLED=0 go build -trimpath -o /out/linkpipe ./cmd/linkpipe \
 && mkdir -p /out/data

# aws-ses-v2-local, the version pinned in testdeps/package-lock.json, for
# the compose topology only (never production).
FROM node:20-alpine AS ses
WORKDIR /ses
COPY testdeps/package.json testdeps/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
USER node
EXPOSE 8005
HEALTHCHECK --interval=5s --timeout=3s --retries=10 CMD wget -q -O /dev/null http://127.0.0.1:8005/ || exit 1
ENTRYPOINT ["node", "node_modules/aws-ses-v2-local/dist/cli.js", "--host", "0.0.0.0", "--port", "8005"]

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/app /app
COPY --from=build /out/linkpipe /linkpipe
COPY --from=build --chown=nonroot:nonroot /out/data /data
# Each container keeps its own bbolt file here; never share it between replicas.
ENV LINKPIPE_DATA_DIR=/data
WORKDIR /data
USER nonroot
ENTRYPOINT ["/app"]
