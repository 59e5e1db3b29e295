# One image per worker: docker build --build-arg CMD=issuer|mailer|redeemer|linkpipe .
FROM golang:1.26 AS build
ARG CMD=linkpipe
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/app ./cmd/${CMD} && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/app /app
COPY --from=build --chown=nonroot:nonroot /out/data /data
# Each container keeps its own bbolt file here; never share it between replicas.
ENV LINKPIPE_DATA_DIR=/data
WORKDIR /data
USER nonroot
ENTRYPOINT ["/app"]
