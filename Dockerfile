# syntax=docker/dockerfile:1
# app-server in a container. Two stages:
#   build    — all dependencies, `tsc`, then `npm pack`: the same tarball a registry install gets.
#   runtime  — that package plus production dependencies only (`npm ci --omit=dev` against the
#              lockfile), run as the unprivileged `node` user, state in a volume.
# test/deploy.test.ts performs the runtime stage's steps outside a container.

FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
COPY scripts ./scripts
# Dependencies first (a cached layer); the build itself runs below, once the sources are in.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build \
 && npm pack --ignore-scripts --pack-destination /out \
 && mkdir /out/app && tar -xzf /out/app-server-*.tgz -C /out/app --strip-components=1 \
 && cp package-lock.json /out/app/

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    APP_SERVER_HOME=/data \
    APP_SERVER_LISTEN=ws://0.0.0.0:4500
WORKDIR /app
COPY --from=build /out/app/ ./
# Production dependencies from the lockfile; `prepare` sees no TypeScript and builds nothing.
# better-sqlite3 fetches its prebuilt binary here (allowed in package.json's allowScripts).
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force \
 && mkdir -p /data && chown node:node /data && chmod 0700 /data
USER node
VOLUME ["/data"]
EXPOSE 4500
# /readyz answers 200 once the server takes connections and 503 while it drains.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:4500/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node is PID 1 itself, so docker stop's SIGTERM reaches it and it drains connections before
# exiting; under `npm start` the signal stops npm and leaves node running.
CMD ["node", "dist/src/main.js"]
