/* placeholder: filled by the commit that adds it */
int main(void)
{
    return 77;
}
