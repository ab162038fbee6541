package pgtest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func query(t *testing.T, dsn string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var db string
	if err := c.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return err
	}
	if db != Database {
		t.Errorf("connected to %q, want %q", db, Database)
	}
	return nil
}

// TestServer: the server answers, stops (a connection then fails), starts
// again with its data, and is on a Unix socket with a short path.
func TestServer(t *testing.T) {
	s := Start(t, Options{})
	if err := query(t, s.DSN()); err != nil {
		t.Fatal(err)
	}
	if len(s.socket()) > maxSocketPath {
		t.Errorf("socket path %d bytes", len(s.socket()))
	}
	ctx := context.Background()
	c, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)

	s.Stop()
	if err := query(t, s.DSN()); err == nil {
		t.Fatal("a query worked with the server stopped")
	}
	s.Start()
	c, err = pgx.Connect(ctx, s.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT n FROM kept").Scan(&n); err != nil || n != 7 {
		t.Fatalf("after a restart: %d, %v", n, err)
	}
}

// TestPassword: with a password, the right one connects and a wrong one
// is refused as PostgreSQL refuses it (SQLSTATE 28P01).
func TestPassword(t *testing.T) {
	s := Start(t, Options{Password: "it's a secret"})
	if err := query(t, s.DSN()); err != nil {
		t.Fatal(err)
	}
	err := query(t, s.DSNWithPassword("wrong"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("wrong password: %v", err)
	}
	if !strings.Contains(s.DSN(), `password='it\'s a secret'`) {
		t.Errorf("DSN %s", s.DSN())
	}
}

// TestOtherRole: Exec makes a role, and DSNAs connects as it, with its
// password when the server asks for one.
func TestOtherRole(t *testing.T) {
	s := Start(t, Options{Password: "owner's"})
	s.Exec(`CREATE ROLE "app user" LOGIN PASSWORD 'app''s'`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSNAs("app user", "app's"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var who string
	if err := c.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != "app user" {
		t.Fatalf("connected as %q, %v", who, err)
	}
	var pgErr *pgconn.PgError
	if err := query(t, s.DSNAs("app user", "wrong")); !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Errorf("a wrong password: %v", err)
	}
}
