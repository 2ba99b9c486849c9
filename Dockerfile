FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --system --create-home execops
COPY --from=build /src/target/release/execops /usr/local/bin/execops
USER execops
EXPOSE 8080
ENTRYPOINT ["execops"]
CMD ["serve"]
