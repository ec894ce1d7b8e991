/* A crawler limited by a semaphore, against a site it serves itself on
   127.0.0.1 (any free port), so it runs anywhere and stops by itself.
   Each page "/N" lists links to other pages; the crawler fetches "/0",
   then every page it finds, each fetch in a task of one task group, at
   most 3 connections at a time (the semaphore). It mirrors this Python,
   and tests/ergonomics_check.sh counts the lines of both; the site
   (serve_page and the C that serves the pages) is left out of both
   counts (its lines are printed apart):
   [python, not counted]
     async def serve_page(reader, writer):
         n = int((await reader.readline()).split()[1][1:])
         await asyncio.sleep(0.01)
         links = [f'/{(3 * n + k) % 40}' for k in (1, 2, 3)] + ['/0']
         writer.write(' '.join(links).encode() + b'\n')
         await writer.drain()
         writer.close()
   [end]
   [python]
     import asyncio

     async def fetch(sem, port, path):
         async with sem:
             reader, writer = await asyncio.open_connection('127.0.0.1', port)
             writer.write(f'GET {path}\n'.encode())
             body = await reader.read()
             writer.close()
         return body.decode().split()

     async def crawl(sem, tg, port, path, seen):
         for link in await fetch(sem, port, path):
             if link not in seen:
                 seen.add(link)
                 tg.create_task(crawl(sem, tg, port, link, seen))

     async def main():
         server = await asyncio.start_server(serve_page, '127.0.0.1', 0)
         port = server.sockets[0].getsockname()[1]
         sem, seen = asyncio.Semaphore(3), {'/0'}
         async with asyncio.TaskGroup() as tg:
             tg.create_task(crawl(sem, tg, port, '/0', seen))
         server.close()
         await server.wait_closed()
         print(f'{len(seen)} pages')

     asyncio.run(main())
   [end]

   Build: cc -std=c99 crawler.c -o crawler -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGES 40

typedef struct {
  evl_semaphore *sem;
  evl_task_group *tg;
  evl_server *server;
  int port, pages, active, max_active;
  unsigned char seen[PAGES];
} site;

/* [not counted] the site: page N links to 3N+1 .. 3N+3 (mod PAGES) and 0 */
typedef struct {
  evl_stream *s;
  int n;
} page_state;

static void serve_page(evl_task *t, void *state) {
  page_state *p = (page_state *)state;
  char body[64];
  int len;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_stream_readline(p->s));
  p->n = atoi((const char *)((evl_bytes *)evl_await_result(t))->data + 5);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.01, NULL));
  len = snprintf(body, sizeof body, "/%d /%d /%d /0\n", (3 * p->n + 1) % PAGES,
                 (3 * p->n + 2) % PAGES, (3 * p->n + 3) % PAGES);
  evl_stream_write(p->s, body, (size_t)len);
  evl_stream_write_eof(p->s);
  EVL_AWAIT(t, evl_stream_drain(p->s));
  EVL_FINALLY(t);
  evl_stream_free(p->s);
  EVL_ASYNC_END(t);
}

static void client_connected(evl_stream *s, void *arg) {
  page_state p;
  p.s = s;
  p.n = 0;
  (void)arg;
  evl_future_release(
      evl_task_create(evl_stream_loop(s), serve_page, &p, sizeof p));
}

/* [counted] the crawler */
typedef struct {
  site *site;
  int page, have_sem;
  evl_stream *conn;
} crawl_state;

static void crawl(evl_task *t, void *state) {
  crawl_state *c = (crawl_state *)state;
  site *w = c->site;
  char req[32], *p;
  int len;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_semaphore_acquire(w->sem));
  c->have_sem = 1;
  if (++w->active > w->max_active)
    w->max_active = w->active;
  EVL_AWAIT_AS(
      t, evl_stream *, c->conn,
      evl_open_connection(evl_task_loop(t), "127.0.0.1", w->port, 0, NULL));
  len = snprintf(req, sizeof req, "GET /%d\n", c->page);
  evl_stream_write(c->conn, req, (size_t)len);
  EVL_AWAIT(t, evl_stream_read(c->conn, -1));
  w->pages++;
  for (p = (char *)((evl_bytes *)evl_await_result(t))->data;
       (p = strchr(p, '/')) != NULL; p++) {
    crawl_state next = {NULL, 0, 0, NULL};
    next.site = w;
    next.page = atoi(p + 1);
    if (next.page < 0 || next.page >= PAGES || w->seen[next.page])
      continue;
    w->seen[next.page] = 1;
    evl_future_release(evl_task_group_create(w->tg, crawl, &next, sizeof next));
  }
  EVL_FINALLY(t); /* the end of `async with sem` and of the connection */
  if (c->conn)
    evl_stream_free(c->conn);
  if (c->have_sem) {
    w->active--;
    evl_semaphore_release(w->sem);
  }
  EVL_ASYNC_END(t);
}

static void main_task(evl_task *t, void *state) {
  site *w = (site *)state;
  evl_loop *loop = evl_task_loop(t);
  crawl_state first = {NULL, 0, 0, NULL};
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT_AS(
      t, evl_server *, w->server,
      evl_start_server(loop, client_connected, w, "127.0.0.1", 0, 0, NULL));
  w->port = evl_server_port(w->server);
  w->sem = evl_semaphore_new(loop, 3, 0);
  w->tg = evl_task_group_new(loop, t);
  w->seen[0] = 1;
  first.site = w;
  evl_future_release(evl_task_group_create(w->tg, crawl, &first, sizeof first));
  EVL_FINALLY(t);
  if (w->tg) {
    EVL_AWAIT_TRY(t, evl_task_group_wait(w->tg));
    evl_task_group_free(w->tg);
  }
  evl_semaphore_free(w->sem);
  if (w->server) {
    evl_server_close(w->server);
    EVL_AWAIT_TRY(t, evl_server_wait_closed(w->server));
    evl_server_free(w->server);
  }
  printf("%d pages, at most %d fetches at a time\n", w->pages, w->max_active);
  EVL_ASYNC_END(t);
}

int main(void) {
  site w;
  memset(&w, 0, sizeof w);
  return evl_run(main_task, &w, 0, NULL, NULL) == 0 && w.pages == PAGES ? 0 : 1;
}
